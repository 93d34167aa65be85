//! SCIM response bodies: error fields, ListResponse lookup, and adoption's reading of an
//! existing resource. Nothing may panic, and every value read at a mapped path must read
//! back the same after being written into a resource.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let run = entra_here_sync::fuzzing::scim_response(data);
    for (path, read, again) in &run.round_trips {
        assert_eq!(read, again, "{path} does not round-trip");
    }
});
