//! Graph delta pages → mirror → plan → acknowledgements → plan, over an in-memory state.
//! Nothing may panic, the state must never fail, the cycle's planner (users settled by
//! their stored keys, the others planned from their rows) must agree with one that parses
//! every user, and a cycle with Entra unchanged after everything was acknowledged must
//! plan nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let run = match entra_here_sync::fuzzing::delta_pages(data) {
        Ok(Some(run)) => run,
        Ok(None) => return,
        Err(e) => panic!("the state failed on a delta input: {e}"),
    };
    if let Some((rows, full)) = run.disagreements.first() {
        panic!(
            "row planner and full planner disagree:\n rows: {:?} {:?}\n full: {:?} {:?}",
            rows.ops, rows.skipped, full.ops, full.skipped
        );
    }
    assert!(
        run.settled.ops.is_empty(),
        "the planner did not settle: {:?}",
        run.settled.ops
    );
});
