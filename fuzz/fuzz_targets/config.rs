//! Config text → validated Config → Mapping. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = entra_here_sync::fuzzing::config_text(data);
});
