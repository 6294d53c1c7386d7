//! The state's journal (format 2) with a real detached supervisor: a hot reload appends to
//! `state.journal` and leaves `state.json` alone, every other process (`ps`, `down`) reads the
//! change, and a journal damaged behind the supervisor's back loses nothing.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Project, alive, service, wait_until, yaml};

const WAIT: Duration = Duration::from_secs(20);

fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

fn services(n: &str) -> String {
    let env = format!("env: {{override: {{N: \"{n}\"}}}}");
    yaml(&[
        service("api", common::SLEEP, &[&env]),
        service("db", common::SLEEP, &[]),
        service("web", common::SLEEP, &[]),
    ])
}

fn journal(p: &Project) -> std::path::PathBuf {
    p.state_dir.join("state.journal")
}

/// A project of three services brought up by a detached supervisor, and their PIDs.
fn started(name: &str) -> (Project, std::collections::BTreeMap<String, i32>) {
    let p = project(name);
    p.write_yaml(&services("0"));
    let out = p.run(&["up", "-d"]);
    assert_eq!(out.code, Some(0), "{out}");
    let pids = p.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    (p, pids)
}

/// Edits `api` and waits until the reload replaced its process: the new PID.
fn reload(p: &Project, n: &str, old: i32) -> i32 {
    p.write_yaml(&services(n));
    wait_until("the reload replaced api", WAIT, || {
        p.pids().get("api").is_some_and(|&pid| pid != old)
    });
    p.pids()["api"]
}

#[test]
fn a_reload_appends_to_the_journal_and_every_reader_sees_it() {
    let (p, before) = started("journal-reload");
    let snapshot = std::fs::read(p.state_file()).expect("state.json");
    let journal_len = std::fs::metadata(journal(&p)).expect("state.journal").len();

    let api = reload(&p, "1", before["api"]);
    assert!(!alive(before["api"]), "the old api still runs");
    // Read by `ps` (another process), through the journal: the others untouched.
    let after = p.pids();
    assert_eq!(after["db"], before["db"]);
    assert_eq!(after["web"], before["web"]);
    assert_eq!(after["api"], api);
    // The reload's saves were appended: the snapshot is the same bytes, the journal grew by
    // about the changed record's saves, not by the state.
    assert_eq!(
        std::fs::read(p.state_file()).unwrap(),
        snapshot,
        "state.json was rewritten for one changed service"
    );
    let state = p.state_value().expect("a state");
    assert_eq!(state["services"]["api"]["process"]["pid"], api);
    let record = serde_json::to_vec(&state["services"]["api"]).unwrap().len() as u64;
    let whole = serde_json::to_vec(&state).unwrap().len() as u64;
    let grew = std::fs::metadata(journal(&p)).unwrap().len() - journal_len;
    assert!(
        grew > 0 && grew < 4 * record + 1024 && grew < 2 * whole,
        "the journal grew by {grew} bytes for a reload (api's record: {record} bytes, the state: {whole})"
    );

    let out = p.run(&["down"]);
    assert_eq!(out.code, Some(0), "{out}");
    for pid in after.values() {
        assert!(!alive(*pid), "pid {pid} survived down");
    }
    assert!(p.marked().is_empty(), "{:?}", p.marked());
    let state = p.state_value().expect("a state");
    assert!(
        state["services"].as_object().is_none_or(|m| m.is_empty()),
        "{state:#}"
    );
}

/// A torn last line and a line that does not parse, appended behind the running supervisor's
/// back: every reader still sees the services as they run, the next reload is applied (and
/// writes a whole new state, never a line after the damage), and `down` leaves nothing.
#[test]
fn a_damaged_journal_loses_nothing() {
    let (p, before) = started("journal-damage");

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(journal(&p))
        .expect("state.journal");
    file.write_all(b"not json at all\n{\"services\":{\"db\":null}}\n{\"services\":{\"web\":nu")
        .unwrap();
    drop(file);
    assert_eq!(p.pids(), before, "the damage changed what `ps` reads");

    let snapshot = std::fs::read(p.state_file()).unwrap();
    let api = reload(&p, "1", before["api"]);
    assert_ne!(
        std::fs::read(p.state_file()).unwrap(),
        snapshot,
        "a save after the damage must write a new snapshot"
    );
    let after = p.pids();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(
        (after["db"], after["web"], after["api"]),
        (before["db"], before["web"], api)
    );

    let out = p.run(&["down"]);
    assert_eq!(out.code, Some(0), "{out}");
    for pid in after.values() {
        assert!(!alive(*pid), "pid {pid} survived down");
    }
    assert!(p.marked().is_empty(), "{:?}", p.marked());
}
