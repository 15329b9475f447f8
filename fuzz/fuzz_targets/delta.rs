//! The delta decoder on bytes from the network: a tick decoded as a batch payload is (with the
//! wire's bincode configuration and limit, through `decode_body`), or failing that a run of ticks,
//! applied in order to a state primed by a real keyframe of a host and to an empty state.
//!
//! Every tick must be applied or refused, never panic. A refused tick leaves the state exactly as
//! it was; an applied one leaves every series it defined present and every value readable.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use twinwatch_common::delta::{DeltaState, SeriesDef, Tick, MAX_SERIES};
use twinwatch_common::frame::decode_body;

/// A keyframe sampled from a real host by `cargo xtask fuzz-corpus`, as a batch carries it.
static KEYFRAME: &[u8] = include_bytes!("../corpus/delta/seed-keyframe");

static PRIMED: LazyLock<DeltaState> = LazyLock::new(|| {
    let keyframe: Tick =
        decode_body(KEYFRAME).expect("the seed keyframe decodes (if the tick changed, `cargo xtask fuzz-corpus`)");
    assert!(keyframe.keyframe && !keyframe.defs.is_empty(), "the seed keyframe is a keyframe");
    let mut state = DeltaState::default();
    state.apply(&keyframe).expect("the seed keyframe applies");
    state
});

fuzz_target!(|data: &[u8]| {
    let ticks = match decode_body::<Tick>(data) {
        Ok(tick) => vec![tick],
        Err(_) => match decode_body::<Vec<Tick>>(data) {
            Ok(ticks) => ticks,
            Err(_) => return,
        },
    };
    apply_all(PRIMED.clone(), &ticks);
    apply_all(DeltaState::default(), &ticks);
});

fn apply_all(mut state: DeltaState, ticks: &[Tick]) {
    for tick in ticks {
        let before = snapshot(&state);
        match state.apply(tick) {
            Ok(()) => check_applied(&state, tick),
            Err(_) => assert!(snapshot(&state) == before, "a refused tick changed the state"),
        }
    }
}

fn check_applied(state: &DeltaState, tick: &Tick) {
    assert!(state.is_keyframed());
    assert_eq!(state.last_ts_ms(), tick.ts_ms);
    // A series defined twice in one tick is what its last definition says.
    let defined: HashMap<u32, &SeriesDef> = tick.defs.iter().map(|d| (d.id, d)).collect();
    for (&id, def) in &defined {
        let series = state.get(id).expect("a defined series is present");
        assert!(*series.key == def.key && series.float == def.float && series.group == def.group);
    }
    for &id in tick.removed.iter().filter(|id| !defined.contains_key(id)) {
        assert!(state.get(id).is_none(), "removed series {id} still present");
    }
    let mut count = 0;
    for series in state.series() {
        std::hint::black_box((series.value(), series.rate()));
        count += 1;
    }
    assert!(count <= MAX_SERIES as usize && count == state.len());
}

/// The state's bytes: equal bytes, equal state, even with NaN scales that `==` would refuse.
fn snapshot(state: &DeltaState) -> Vec<u8> {
    bincode::encode_to_vec(state, bincode::config::standard()).expect("a state encodes")
}
