//! Finding the project as docker compose finds its file: commands run from a subdirectory act
//! on the project above; without a file or a recorded project they fail and create nothing;
//! `down`/`restart|stop|start` refuse the state of another file of the same project name
//! (unless `-p`); `up -d` with an unknown service fails, with or without a running supervisor;
//! `restart|stop|start` without names act on every service.
//!
//! Real processes (the `local` launcher, `sleep`), no `-f`: the binary finds the file itself.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Out, Project, Running, alive, mirrord_up};
use serde_json::Value;

const TWO: &str = r#"
services:
  api:
    target: none
    stop_timeout: 1
    run:
      command: ["sleep", "300"]
  worker:
    target: none
    stop_timeout: 1
    run:
      command: ["sleep", "300"]
"#;

fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(TWO);
    p
}

/// `mirrord-up ARGS` run in `dir`, with no `-f`: the project's state root, the local launcher.
fn in_dir(p: &Project, dir: &Path, args: &[&str]) -> Out {
    let mut cmd = mirrord_up();
    cmd.current_dir(dir)
        .arg("--state-dir")
        .arg(&p.state_root)
        .args(["--launcher", "local", "-k", "tester"])
        .args(args);
    Running::start(
        cmd,
        format!("mirrord-up {} (in {})", args.join(" "), dir.display()),
    )
    .wait()
}

fn ps_in(p: &Project, dir: &Path) -> BTreeMap<String, Value> {
    let out = in_dir(p, dir, &["ps", "--format", "json"]);
    assert_eq!(out.code, Some(0), "ps: {out}");
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("ps json");
    rows.into_iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r))
        .collect()
}

fn statuses(rows: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    rows.iter()
        .map(|(n, r)| (n.clone(), r["status"].as_str().unwrap().to_owned()))
        .collect()
}

fn pids(rows: &BTreeMap<String, Value>) -> BTreeMap<String, i64> {
    rows.iter()
        .filter_map(|(n, r)| Some((n.clone(), r["pid"].as_i64()?)))
        .collect()
}

fn all(status: &str) -> Vec<(String, String)> {
    ["api", "worker"]
        .iter()
        .map(|n| (n.to_string(), status.to_owned()))
        .collect()
}

#[test]
fn commands_in_a_subdirectory_act_on_the_project_above() {
    let p = project("above");
    let deep = p.dir.join("src/deep");
    std::fs::create_dir_all(&deep).unwrap();

    let out = in_dir(&p, &deep, &["up", "-d", "--no-watch"]);
    assert_eq!(out.code, Some(0), "up -d from a subdirectory: {out}");
    let rows = ps_in(&p, &deep);
    assert_eq!(statuses(&rows), all("running"), "{rows:#?}");
    // The very project `-f` names (the same state directory, no other one made).
    assert_eq!(pids(&p.ps_map()), pids(&rows));
    let entries: Vec<_> = std::fs::read_dir(&p.state_root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["above"], "state dirs: {entries:?}");

    let out = in_dir(&p, &deep, &["logs"]);
    assert_eq!(out.code, Some(0), "logs: {out}");
    // An empty MIRRORD_UP_FILE is no file named (as an empty COMPOSE_FILE).
    let mut cmd = mirrord_up();
    cmd.current_dir(&deep)
        .env("MIRRORD_UP_FILE", "")
        .arg("--state-dir")
        .arg(&p.state_root)
        .args(["ps", "--format", "json"]);
    let out = Running::start(cmd, "ps with MIRRORD_UP_FILE=''".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("\"api\""), "{out}");

    // Without names: every service (compose).
    let before = pids(&rows);
    let out = in_dir(&p, &deep, &["restart", "-t", "1"]);
    assert_eq!(out.code, Some(0), "restart: {out}");
    let rows = ps_in(&p, &deep);
    assert_eq!(statuses(&rows), all("running"), "{rows:#?}");
    for (name, pid) in pids(&rows) {
        assert_ne!(before[&name], pid, "{name} was not restarted");
    }
    let out = in_dir(&p, &deep, &["stop", "-t", "1"]);
    assert_eq!(out.code, Some(0), "stop: {out}");
    assert_eq!(statuses(&ps_in(&p, &deep)), all("stopped"));
    let out = in_dir(&p, &deep, &["start"]);
    assert_eq!(out.code, Some(0), "start: {out}");
    let rows = ps_in(&p, &deep);
    assert_eq!(statuses(&rows), all("running"), "{rows:#?}");

    let running = pids(&rows);
    let out = in_dir(&p, &deep, &["down", "-t", "1"]);
    assert_eq!(out.code, Some(0), "down: {out}");
    assert!(!out.stdout.contains("nothing to stop"), "{out}");
    for (name, pid) in running {
        assert!(!alive(pid as i32), "{name} (pid {pid}) survived down");
    }
    assert!(ps_in(&p, &deep).is_empty());
}

#[test]
fn restart_stop_start_without_names_through_the_supervisor() {
    let p = project("sup");
    p.ok(&["up", "-d"]);
    let before = p.pids();
    assert_eq!(before.len(), 2);
    let out = in_dir(&p, &p.dir, &["restart", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    let after = p.pids();
    for (name, pid) in &after {
        assert_ne!(before[name], *pid, "{name} was not restarted");
    }
    let out = in_dir(&p, &p.dir, &["stop", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(p.pids().is_empty(), "{:#?}", p.ps());
    let out = in_dir(&p, &p.dir, &["start"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(p.pids().len(), 2);
}

#[test]
fn without_a_file_or_a_recorded_project_commands_fail_and_create_nothing() {
    let p = Project::new("nothing");
    let empty = tempfile::tempdir().unwrap();
    assert!(
        empty
            .path()
            .ancestors()
            .all(|d| !d.join("mirrord-up.yaml").exists()),
        "a mirrord-up.yaml above {} spoils this test",
        empty.path().display()
    );
    for args in [
        &["ps"][..],
        &["down"],
        &["logs"],
        &["restart"],
        &["stop", "api"],
        &["start"],
        &["plan"],
        &["config"],
        &["check"],
        &["up", "-d"],
    ] {
        let out = in_dir(&p, empty.path(), args);
        assert_eq!(out.code, Some(1), "{args:?}: {out}");
        assert!(
            out.stderr.contains("no mirrord-up.yaml in") && out.stderr.contains("or any parent"),
            "{args:?}: {out}"
        );
    }
    // A named project that was never recorded, and a named file that does not exist.
    let out = in_dir(&p, empty.path(), &["-p", "ghost", "ps"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("no project `ghost`"), "{out}");
    let out = in_dir(&p, empty.path(), &["-f", "missing.yaml", "down"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("missing.yaml does not exist"), "{out}");

    let made: Vec<_> = std::fs::read_dir(&p.state_root)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "state directories were created: {made:?}");
}

#[test]
fn a_file_that_never_ran_has_nothing_to_stop_and_no_state_dir() {
    let p = project("fresh");
    let out = in_dir(&p, &p.dir, &["down"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("nothing to stop"), "{out}");
    let out = in_dir(&p, &p.dir, &["ps"]);
    assert_eq!(out.code, Some(0), "{out}");
    let out = in_dir(&p, &p.dir, &["logs"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!p.state_dir.exists(), "a state directory was made");
}

#[test]
fn a_project_whose_file_was_removed_is_found_from_its_directory() {
    let p = project("removed");
    p.ok(&["up", "-d", "--no-watch"]);
    let running = p.pids();
    std::fs::rename(&p.yaml, p.dir.join("kept-aside.yaml")).unwrap();
    let sub = p.dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let rows = ps_in(&p, &sub);
    assert_eq!(statuses(&rows), all("running"), "{rows:#?}");
    let out = in_dir(&p, &sub, &["down", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    for (name, pid) in running {
        assert!(!alive(pid), "{name} (pid {pid}) survived down");
    }
}

#[test]
fn another_file_of_the_same_project_name_is_refused_unless_p_is_given() {
    let p = project("twin");
    p.ok(&["up", "-d"]);
    let running = p.pids();
    std::fs::write(p.dir.join("other.yaml"), TWO).unwrap();
    for args in [
        &["-f", "other.yaml", "down"][..],
        &["-f", "other.yaml", "restart"],
        &["-f", "other.yaml", "stop", "api"],
        &["-f", "other.yaml", "start"],
    ] {
        let out = in_dir(&p, &p.dir, args);
        assert_eq!(out.code, Some(1), "{args:?}: {out}");
        assert!(
            out.stderr.contains(&p.yaml.display().to_string())
                && out.stderr.contains("other.yaml")
                && out.stderr.contains("-p twin"),
            "{args:?}: {out}"
        );
        assert_eq!(p.pids(), running, "{args:?} touched a service");
    }
    // Named explicitly, the project is acted on.
    let out = in_dir(
        &p,
        &p.dir,
        &["-f", "other.yaml", "-p", "twin", "stop", "api"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!alive(running["api"]));
    assert!(alive(running["worker"]));
}

#[test]
fn up_d_with_an_unknown_service_fails_with_or_without_a_supervisor() {
    let p = project("unknown");
    let out = p.run(&["up", "-d", "nosuch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("nosuch"), "{out}");
    assert!(p.pids().is_empty(), "{:#?}", p.ps());

    p.ok(&["up", "-d", "api"]);
    let running = p.pids();
    assert_eq!(running.keys().collect::<Vec<_>>(), ["api"]);
    // Through the running supervisor: refused, and the rest of the file is not applied.
    let out = p.run(&["up", "-d", "nosuch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("nosuch"), "{out}");
    assert_eq!(p.pids(), running);
}
