//! A `[local_agent]` never outlives its aggregator: killed with `kill -9`, the aggregator takes
//! its agent with it (the kernel's parent-death signal); stopped, it stops its agent.

use std::path::Path;
use std::time::Duration;

use twinwatch_tests::{children, wait_for, Aggregator, TempDir};

/// Whether `pid` still runs: present and not a zombie waiting for whoever adopted it.
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

fn agent_of(agg: &Aggregator) -> i32 {
    let pid = agg.proc.as_ref().expect("running").pid();
    wait_for("the local agent running", Duration::from_secs(20), || {
        let kids = children(pid);
        (kids.len() == 1).then(|| kids[0])
    })
}

fn start(dir: &Path) -> Aggregator {
    let agent = dir.join("local-agent.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&agent, "interval = \"1s\"\n[buffer]\nflush_interval = \"100ms\"\n").unwrap();
    let extra = format!("[local_agent]\nid = \"beside\"\ndc = \"dc9\"\nconfig = \"{}\"\n", agent.display());
    Aggregator::start_with(dir, &extra)
}

#[test]
fn a_killed_aggregator_takes_its_local_agent_with_it() {
    let tmp = TempDir::new("local-agent-kill9");
    let mut agg = start(&tmp.path().join("agg"));
    wait_for("the local agent's host", Duration::from_secs(30), || agg.get("/api/v1/hosts/beside"));
    let agent = agent_of(&agg);
    assert!(running(agent));

    agg.proc.as_mut().unwrap().kill9();
    wait_for("the orphaned local agent to end", Duration::from_secs(20), || (!running(agent)).then_some(()));
    // It ended on SIGTERM, cleanly: its stderr is the aggregator's log, and it says so.
    let log = agg.proc.as_ref().unwrap().log.clone();
    wait_for("the local agent's last words", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).ok()?.contains("agent stopped; buffer flushed").then_some(())
    });

    // Started again, a clean stop takes the new agent with it too.
    agg.restart();
    let agent = agent_of(&agg);
    agg.proc.as_mut().unwrap().terminate().expect("the aggregator stops on SIGTERM");
    assert!(!running(agent), "the local agent outlived a clean stop");
}
