//! The engine with real processes: `up --detach`, `plan`, `ps`, `logs`, `down` against the fake
//! mirrord (`--mirrord-bin`), each test in its own project and state dir, cleaned up by a guard
//! even when it fails. "A group is empty" means: no non-zombie process has that PGID.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    OwnChild, Project, SLEEP, alive, environ, group_empty, group_members, ignores, service, stat,
    wait_until, yaml,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn sleepers(names: &[String]) -> Vec<String> {
    names.iter().map(|n| service(n, SLEEP, &[])).collect()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

/// Every PID in `pids` is a live leader of its own group and session, marked with its name.
fn assert_marked_leaders(p: &Project, pids: &BTreeMap<String, i32>) {
    for (name, pid) in pids {
        let st = stat(*pid).unwrap_or_else(|| panic!("{name}: pid {pid} not in /proc"));
        assert!(!st.zombie(), "{name}: pid {pid} is a zombie");
        assert_eq!(st.pgrp, *pid, "{name}: pid {pid} is not a group leader");
        assert_eq!(
            st.session, *pid,
            "{name}: pid {pid} is not a session leader"
        );
        let env = environ(*pid).expect("environ");
        assert_eq!(
            env.get("MIRRORD_UP_SERVICE"),
            Some(name),
            "{name}: marker of pid {pid}"
        );
        assert_eq!(env.get("MIRRORD_UP_PROJECT"), Some(&p.name), "{name}");
    }
}

/// Exactly one live marked group leader per service, and nothing marked for anything else.
fn assert_each_runs_once(p: &Project, services: &[String]) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    for s in services {
        let leaders = p.leaders_of(s);
        assert_eq!(leaders.len(), 1, "{s}: live leaders {leaders:?}");
        out.insert(s.clone(), leaders[0]);
    }
    let known: BTreeSet<&str> = services.iter().map(String::as_str).collect();
    for (st, env) in p.marked() {
        let svc = env.get("MIRRORD_UP_SERVICE").cloned().unwrap_or_default();
        assert!(
            known.contains(svc.as_str()),
            "unexpected marked process {} of `{svc}`",
            st.pid
        );
    }
    out
}

// 1 ------------------------------------------------------------------------------------------

#[test]
fn twenty_services_start_as_marked_group_leaders_through_mirrord() {
    let p = Project::new("twenty");
    let svcs = names("svc", 20);
    p.write_yaml(&yaml(&sleepers(&svcs)));

    p.ok(&["up", "--detach", "--no-watch"]);

    let rows = p.ps();
    assert_eq!(rows.len(), 20, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["status"], "running", "{r}");
        assert_eq!(r["launcher"], "mirrord", "{r}");
    }
    let pids = p.pids();
    assert_eq!(
        pids.keys().cloned().collect::<Vec<_>>(),
        svcs,
        "ps shows a PID for every service"
    );
    assert_marked_leaders(&p, &pids);
    assert_eq!(
        pids.values().collect::<BTreeSet<_>>().len(),
        20,
        "distinct PIDs"
    );

    let execs = p.execs_by_service();
    assert_eq!(execs.len(), 20, "{execs:#?}");
    for rec in p.fake_log() {
        assert_eq!(rec["handover"], "resolved", "{rec}");
    }
    for s in &svcs {
        let config = p
            .state_dir
            .join("services")
            .join(s)
            .join("mirrord.json")
            .display()
            .to_string();
        // The config is handed over in MIRRORD_UP_RESOLVED_CONFIG, as real `mirrord up` does;
        // mirrord.json is still written for inspection.
        let expected = vec![
            "exec".to_owned(),
            "--".to_owned(),
            "sleep".to_owned(),
            "1000".to_owned(),
        ];
        assert_eq!(execs[s], vec![expected], "{s}: fake mirrord argv");
        assert!(
            std::path::Path::new(&config).is_file(),
            "{config} was written"
        );
    }
}

// 2 ------------------------------------------------------------------------------------------

#[test]
fn reconcile_touches_only_what_changed() {
    let p = Project::new("reconcile");
    let mut svcs = names("svc", 6);
    let changed = "svc-03";
    let with_foo = |name: &str, foo: &str| {
        service(
            name,
            SLEEP,
            &[&format!("env: {{override: {{FOO: \"{foo}\"}}}}")],
        )
    };
    let file = |svcs: &[String], changed_value: &str| {
        yaml(
            &svcs
                .iter()
                .map(|n| with_foo(n, if n == changed { changed_value } else { "one" }))
                .collect::<Vec<_>>(),
        )
    };
    p.write_yaml(&file(&svcs, "one"));
    p.ok(&["up", "--detach", "--no-watch"]);
    let before = p.pids();
    assert_eq!(before.len(), 6, "{before:?}");

    // Unchanged: nothing happens.
    let out = p.ok(&["up", "--detach", "--no-watch"]);
    assert!(out.stdout.contains("nothing to do"), "{out}");
    assert_eq!(p.pids(), before, "an unchanged up touched a process");
    assert!(before.values().all(|pid| alive(*pid)));
    let out = p.run(&["plan"]);
    assert_eq!(out.code, Some(0), "plan with nothing to do: {out}");
    let out = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.code,
        Some(0),
        "plan --detailed-exitcode, nothing to do: {out}"
    );

    // One env.override value changes.
    p.write_yaml(&file(&svcs, "two"));
    // Exit 0 once printed; `--detailed-exitcode` says 2: changes pending (terraform).
    let out = p.run(&["plan"]);
    assert_eq!(out.code, Some(0), "plan prints and exits 0: {out}");
    let out = p.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, Some(2), "plan with a pending change: {out}");
    let mentions: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("env.override"))
        .collect();
    assert_eq!(mentions.len(), 1, "{out}");
    assert!(mentions[0].contains(changed), "{out}");
    assert!(mentions[0].contains("env.override.FOO"), "{out}");
    assert!(mentions[0].contains("restart"), "{out}");
    for s in svcs.iter().filter(|s| *s != changed) {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(s.as_str()))
            .unwrap_or_else(|| panic!("no plan line for {s}: {out}"));
        assert!(line.starts_with("keep"), "{s}: {line}");
    }

    let out = p.run(&["plan", "--format", "json", "--detailed-exitcode"]);
    assert_eq!(out.code, Some(2), "{out}");
    let steps: Vec<Value> = serde_json::from_str(&out.stdout).expect("plan json");
    assert_eq!(steps.len(), 6, "{steps:#?}");
    let changes: Vec<&Value> = steps.iter().filter(|s| s["action"] != "keep").collect();
    assert_eq!(changes.len(), 1, "{steps:#?}");
    assert_eq!(changes[0]["service"], changed);
    assert_eq!(changes[0]["action"], "restart");
    assert!(
        changes[0]["cause"]
            .as_str()
            .unwrap()
            .contains("env.override.FOO"),
        "{steps:#?}"
    );

    p.ok(&["up", "--detach", "--no-watch"]);
    let after = p.pids();
    assert_eq!(after.len(), 6, "{after:?}");
    for s in &svcs {
        if s == changed {
            assert_ne!(after[s], before[s], "{s} was not restarted");
        } else {
            assert_eq!(after[s], before[s], "{s} was touched");
        }
    }
    assert!(
        group_empty(before[changed]),
        "old group of {changed} still has {:?}",
        group_members(before[changed])
    );
    let env = environ(after[changed]).expect("environ");
    assert_eq!(env.get("FOO").map(String::as_str), Some("two"));
    assert_eq!(
        environ(after["svc-00"])
            .unwrap()
            .get("FOO")
            .map(String::as_str),
        Some("one")
    );
    assert_marked_leaders(&p, &after);

    // A service removed from the file is stopped and forgotten.
    let removed = svcs.pop().unwrap();
    p.write_yaml(&file(&svcs, "two"));
    let out = p.ok(&["up", "--detach", "--no-watch"]);
    assert!(out.stderr.contains(&removed), "{out}");
    assert!(
        group_empty(after[&removed]),
        "removed {removed} still runs: {:?}",
        group_members(after[&removed])
    );
    let now = p.pids();
    assert!(!now.contains_key(&removed), "{now:?}");
    for s in &svcs {
        assert_eq!(now[s], after[s], "{s} was touched by a removal");
    }

    // A service added to the file is started; the others are untouched.
    svcs.push("added".to_owned());
    p.write_yaml(&file(&svcs, "two"));
    p.ok(&["up", "--detach", "--no-watch"]);
    let last = p.pids();
    assert_eq!(last.len(), 6, "{last:?}");
    for s in svcs.iter().filter(|s| *s != "added") {
        assert_eq!(last[s], after[s], "{s} was touched by an addition");
    }
    assert_eq!(p.ps_map()["added"]["status"], "running");
    assert_marked_leaders(&p, &last);
    assert_each_runs_once(&p, &svcs);
}

// 3 ------------------------------------------------------------------------------------------

#[test]
fn down_empties_every_group_even_with_a_term_ignoring_grandchild() {
    let p = Project::new("down");
    // The subshell ignores TERM and execs sleep (ignored dispositions survive exec); the shell
    // itself execs another sleep, the group leader.
    let stubborn = [
        "sh",
        "-c",
        "(trap '' TERM; exec sleep 1000) & exec sleep 1000",
    ];
    p.write_yaml(&yaml(&[
        service("plain", SLEEP, &[]),
        service("stubborn", &stubborn, &["stop_timeout: 1"]),
    ]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let pids = p.pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let leader = pids["stubborn"];

    // The grandchild really is in the group and really ignores TERM.
    wait_until(
        "the stubborn group has a TERM-ignoring member",
        WAIT,
        || {
            let m = group_members(leader);
            m.len() == 2
                && m.iter()
                    .any(|&pid| pid != leader && ignores(pid, Signal::SIGTERM))
        },
    );
    let members: Vec<i32> = group_members(leader)
        .into_iter()
        .chain(group_members(pids["plain"]))
        .collect();
    assert!(!ignores(leader, Signal::SIGTERM));

    let out = p.ok(&["down"]);
    assert!(out.stderr.contains("stubborn"), "{out}");
    for (name, pgid) in &pids {
        assert!(
            group_empty(*pgid),
            "{name}: group {pgid} still has {:?}",
            group_members(*pgid)
        );
    }
    for pid in members {
        assert!(!alive(pid), "pid {pid} survived down");
    }
    let rows = p.ps();
    assert!(rows.is_empty(), "{rows:#?}");
    let state = p.state_value().expect("a state");
    assert!(
        state["services"].as_object().is_none_or(|m| m.is_empty()),
        "{state:#}"
    );

    let again = p.run(&["down"]);
    assert_eq!(again.code, Some(0), "second down: {again}");
}

/// A `down` of many services says each stop once, on its output and in the events file,
/// whether a supervisor stops them (it says the stops that ended together in one write, and
/// the client hands on together what it read together) or the `down` itself does.
#[test]
fn down_says_each_stop_once() {
    for supervised in [true, false] {
        let p = Project::new(if supervised { "said-sup" } else { "said-own" });
        let names = names("s", 12);
        p.write_yaml(&yaml(&sleepers(&names)));
        if supervised {
            p.ok(&["up", "--detach"]);
        } else {
            p.ok(&["ci", "start", "--up"]);
        }
        let state = p.state_value().expect("a state");
        assert_eq!(state["supervisor"].is_object(), supervised, "{state:#}");
        assert_eq!(p.pids().len(), names.len());
        let out = p.ok(&["down"]);
        let journal = std::fs::read_to_string(p.state_dir.join("events.log")).unwrap_or_default();
        for name in &names {
            let said = out
                .stderr
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(name) && l.contains("stopped"))
                .count();
            assert_eq!(said, 1, "{name} (supervised: {supervised}): {out}");
            let recorded = journal
                .lines()
                .filter(|l| {
                    let mut fields = l.split('\t').skip(1);
                    fields.next() == Some(name)
                        && fields.nth(1).is_some_and(|w| w.starts_with("stopped"))
                })
                .count();
            assert_eq!(recorded, 1, "{name} (supervised: {supervised}):\n{journal}");
        }
    }
}

// 4 ------------------------------------------------------------------------------------------

#[test]
fn killed_service_shows_exited_and_the_next_up_restarts_it() {
    let p = Project::new("crashed");
    p.write_yaml(&yaml(&[
        service("victim", SLEEP, &[]),
        service("bystander", SLEEP, &[]),
    ]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let before = p.pids();
    let victim = before["victim"];

    kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill victim");
    wait_until("the victim is dead", WAIT, || !alive(victim));
    let rows = p.ps_map();
    let status = rows["victim"]["status"].as_str().unwrap();
    assert!(status.starts_with("exited"), "victim: {status}");
    assert!(rows["victim"]["pid"].is_null(), "{:#}", rows["victim"]);
    assert_eq!(rows["bystander"]["status"], "running");

    let out = p.ok(&["up", "--detach", "--no-watch"]);
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("victim"))
        .unwrap_or_else(|| panic!("no line about victim: {out}"));
    assert!(line.contains("not running"), "{out}");
    assert!(
        !out.stderr.lines().any(|l| l.starts_with("bystander")),
        "{out}"
    );
    let after = p.pids();
    assert_ne!(after["victim"], victim);
    assert_eq!(after["bystander"], before["bystander"]);
    assert_eq!(p.ps_map()["victim"]["status"], "running");
    assert_marked_leaders(&p, &after);
    assert_each_runs_once(&p, &["bystander".to_owned(), "victim".to_owned()]);
}

// 5 ------------------------------------------------------------------------------------------

#[test]
fn a_recorded_pid_that_now_belongs_to_a_stranger_is_never_signalled() {
    let p = Project::new("recycled");
    p.write_yaml(&yaml(&[service("svc", SLEEP, &[])]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let real = p.pids()["svc"];

    // A stranger in its own group, started at a different clock tick than the service: spawn
    // until the tick has moved on (each attempt is an event, not a pause).
    let recorded_start = |p: &Project| {
        let state = p.state_value().expect("a state");
        state["services"]["svc"]["process"]["start_time"]
            .as_u64()
            .expect("start_time recorded")
    };
    let first_start = recorded_start(&p);
    let mut stranger = (0..10_000)
        .map(|_| OwnChild::sleep_in_own_group())
        .find(|c| stat(c.pid()).expect("stranger in /proc").start_time != first_start)
        .expect("a stranger with another start time");
    let spid = stranger.pid();
    assert_eq!(stat(spid).unwrap().pgrp, spid);

    // Points the record of `svc` at the stranger, keeping the recorded start time.
    let point_at_stranger = |p: &Project| {
        let mut state = p.state_value().expect("a state");
        let process = &mut state["services"]["svc"]["process"];
        assert_ne!(
            process["start_time"].as_u64(),
            stat(spid).map(|s| s.start_time),
            "the stranger started in the same clock tick as the service"
        );
        process["pid"] = spid.into();
        process["pgid"] = spid.into();
        p.write_state(&state);
    };
    point_at_stranger(&p);

    // Observed as gone, not as ours.
    let row = &p.ps_map()["svc"];
    assert!(
        row["status"].as_str().unwrap().starts_with("exited"),
        "{row:#}"
    );
    assert!(row["pid"].is_null(), "{row:#}");

    // `up` starts the service again (as far as it can tell the recorded process is gone)
    // without touching the stranger, not even to clear leftovers of the old group.
    let out = p.ok(&["up", "--detach", "--no-watch"]);
    assert!(out.stderr.contains("not running"), "{out}");
    assert!(
        stranger.0.try_wait().expect("try_wait").is_none(),
        "up signalled the stranger: {out}"
    );
    let second = p.pids()["svc"];
    assert_ne!(second, spid);

    // `down` with the record pointing at the stranger again.
    point_at_stranger(&p);
    let out = p.run(&["down", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        stranger.0.try_wait().expect("try_wait").is_none(),
        "down signalled the stranger: {out}"
    );
    assert!(alive(spid));

    // The processes the tampered records lost track of are found by their markers and
    // stopped by the same `down`; the stranger still is not hit.
    assert!(group_empty(real), "{:?}", group_members(real));
    assert!(group_empty(second), "{:?}", group_members(second));
    assert!(stranger.0.try_wait().expect("try_wait").is_none());
    drop(stranger); // kills and reaps it
}

// 6 ------------------------------------------------------------------------------------------

#[test]
fn two_concurrent_ups_start_each_service_once() {
    let p = Project::new("concurrent");
    let svcs = names("svc", 8);
    p.write_yaml(&yaml(&sleepers(&svcs)));

    let a = p.start(&["up", "--detach", "--no-watch"]);
    let b = p.start(&["up", "--detach", "--no-watch"]);
    let (a, b) = (a.wait(), b.wait());
    assert_eq!(a.code, Some(0), "first: {a}");
    assert_eq!(b.code, Some(0), "second: {b}");

    let leaders = assert_each_runs_once(&p, &svcs);
    assert_eq!(
        p.pids(),
        leaders,
        "ps shows the one process of each service"
    );
    let execs = p.execs_by_service();
    for s in &svcs {
        assert_eq!(execs[s].len(), 1, "{s} was launched {:?}", execs[s]);
    }
}

// 7 ------------------------------------------------------------------------------------------

#[test]
fn truncated_state_is_refused_kept_aside_and_down_force_recovers() {
    let p = Project::new("corrupt");
    let svcs = names("svc", 3);
    p.write_yaml(&yaml(&sleepers(&svcs)));
    p.ok(&["up", "--detach", "--no-watch"]);
    let pids = p.pids();
    assert_eq!(pids.len(), 3);

    let path = p.state_file();
    let whole = std::fs::read(&path).unwrap();
    let half = &whole[..whole.len() / 2];
    std::fs::write(&path, half).unwrap();
    let path_text = path.display().to_string();
    let corrupt_copies = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&p.state_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("state.json.corrupt-"))
            })
            .collect()
    };

    // Read-only: a clear error, and the file is left alone.
    let out = p.run(&["ps"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("corrupt"), "{out}");
    assert!(out.stderr.contains(&path_text), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), half, "ps changed the file");
    assert!(
        !out.stderr.contains("kept aside") || !corrupt_copies().is_empty(),
        "ps claims the file was kept aside, but nothing was: {out}"
    );

    // Mutating: the same error, and the bad file is kept aside.
    let out = p.run(&["up", "--detach", "--no-watch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("corrupt"), "{out}");
    assert!(out.stderr.contains(&path_text), "{out}");
    let copies = corrupt_copies();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(std::fs::read(&copies[0]).unwrap(), half);
    assert!(
        out.stderr.contains(&copies[0].display().to_string()),
        "the message names the kept copy: {out}"
    );
    // Nothing lost: the services still run.
    assert_each_runs_once(&p, &svcs);

    // Without a state, a new up must not start them a second time.
    let out = p.run(&["up", "--detach", "--no-watch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("down --force"), "{out}");
    assert_each_runs_once(&p, &svcs);

    let out = p.run(&["down", "--force", "-t", "1"]);
    assert_eq!(out.code, Some(0), "{out}");
    let left = p.marked();
    assert!(
        left.is_empty(),
        "processes of the project survived down --force: {:?}",
        left.iter().map(|(s, _)| s.pid).collect::<Vec<_>>()
    );
    for (s, pid) in &pids {
        assert!(group_empty(*pid), "{s}");
    }
}

// 8 ------------------------------------------------------------------------------------------

#[test]
fn a_crash_between_spawn_and_record_is_adopted_not_duplicated() {
    let p = Project::new("crash");
    // More than the threads that share a level's spawns (four at most).
    let svcs = names("svc", 8);
    p.write_yaml(&yaml(&sleepers(&svcs)));

    let mut cmd = p.command(&["up", "--detach", "--no-watch"]);
    cmd.env("MIRRORD_UP_TEST_CRASH_AFTER_SPAWN", "1");
    let out = common::Running::start(cmd, "crashing up".into()).wait();
    // The background supervisor died mid-pass (exit 99); its client says so.
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("ended before its first pass"), "{out}");
    let orphans = p.marked();
    // The level's spawns are shared between threads: the crash comes right after the first
    // one, and each other thread may have spawned one meanwhile.
    let crashed: Vec<_> = orphans.iter().filter(|(s, _)| s.pid == s.pgrp).collect();
    assert!(
        (1..svcs.len()).contains(&crashed.len()),
        "one process spawned before the crash (one per thread at most), not the level: {}",
        crashed.len()
    );
    let orphans: BTreeMap<String, i32> = crashed
        .iter()
        .map(|(s, env)| {
            p.remember_pgid(s.pgrp);
            (env["MIRRORD_UP_SERVICE"].clone(), s.pid)
        })
        .collect();

    let out = p.ok(&["up", "--detach", "--no-watch"]);
    assert!(out.stderr.contains("adopted"), "{out}");
    let leaders = assert_each_runs_once(&p, &svcs);
    let pids = p.pids();
    assert_eq!(pids, leaders);
    for (service, pid) in &orphans {
        assert_eq!(leaders[service], *pid, "{service}: the orphan was adopted");
    }
    for r in p.ps() {
        assert_eq!(r["status"], "running", "{r}");
    }
    let execs = p.execs_by_service();
    for s in &svcs {
        assert_eq!(execs[s].len(), 1, "{s} was launched {:?}", execs[s]);
    }

    p.ok(&["down", "-t", "1"]);
    assert!(p.marked().is_empty(), "down left processes of the project");
}

// 9 ------------------------------------------------------------------------------------------

#[test]
fn logs_tail_with_and_without_prefix() {
    let p = Project::new("logs");
    p.write_yaml(&yaml(&[
        service(
            "greeter",
            &["sh", "-c", "echo hello-$FOO; exec sleep 1000"],
            &["env: {override: {FOO: world}}"],
        ),
        service(
            "longer-named",
            &["sh", "-c", "echo other-line; exec sleep 1000"],
            &[],
        ),
    ]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let rows = p.ps_map();
    for (name, last) in [("greeter", "hello-world"), ("longer-named", "other-line")] {
        let log = rows[name]["log"].as_str().unwrap().to_owned();
        wait_until(&format!("{name} logged its line"), WAIT, || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().any(|l| l == last))
        });
    }

    let out = p.ok(&["logs", "-n", "1", "greeter"]);
    assert_eq!(out.stdout, "greeter | hello-world\n", "{out}");

    let out = p.ok(&["logs", "--no-prefix", "greeter"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.last(), Some(&"hello-world"), "{out}");
    assert!(lines.contains(&"Ready!"), "{out}");
    assert!(lines.iter().all(|l| !l.contains(" | ")), "{out}");

    let out = p.ok(&["logs", "-n", "1", "--no-prefix", "greeter"]);
    assert_eq!(out.stdout, "hello-world\n", "{out}");

    // Several services: one line each, names padded to the same width.
    let out = p.ok(&["logs", "-n", "1"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        ["greeter      | hello-world", "longer-named | other-line"],
        "{out}"
    );
}

// 10 -----------------------------------------------------------------------------------------

#[test]
fn a_missing_command_binary_fails_that_service_only() {
    let p = Project::new("missing");
    p.write_yaml(&yaml(&[
        service("good-a", SLEEP, &[]),
        service("broken", &["/nonexistent/binary"], &[]),
        service("good-b", SLEEP, &[]),
    ]));
    let out = p.run(&["up", "--detach", "--no-watch"]);
    assert_eq!(out.code, Some(1), "{out}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    assert!(error.contains("broken"), "{out}");
    assert!(error.contains("/nonexistent/binary"), "{out}");
    assert!(!error.contains("good-"), "{out}");

    let rows = p.ps_map();
    for s in ["good-a", "good-b"] {
        assert_eq!(rows[s]["status"], "running", "{:#}", rows[s]);
        assert!(alive(rows[s]["pid"].as_i64().unwrap() as i32));
    }
    assert_eq!(rows["broken"]["status"], "failed", "{:#}", rows["broken"]);
    assert!(rows["broken"]["pid"].is_null());
    assert!(p.leaders_of("broken").is_empty());
    assert!(!p.execs_by_service().contains_key("broken"));

    // Trying again fails the same way and leaves the good ones alone.
    let good = p.pids();
    let out = p.run(&["up", "--detach", "--no-watch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("broken"), "{out}");
    assert_eq!(p.pids(), good);
    assert_each_runs_once(&p, &["good-a".to_owned(), "good-b".to_owned()]);
}

// 11 -----------------------------------------------------------------------------------------

#[test]
fn local_launcher_applies_env_override_without_mirrord() {
    let mut p = Project::new("local");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[service(
        "loc",
        SLEEP,
        &["env: {override: {LOCAL_VAR: from-yaml}}"],
    )]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let pids = p.pids();
    assert_marked_leaders(&p, &pids);
    let env = environ(pids["loc"]).expect("environ");
    assert_eq!(env.get("LOCAL_VAR").map(String::as_str), Some("from-yaml"));
    assert!(!env.contains_key("MIRRORD_PROGRESS_MODE"), "{env:?}");
    // The command line is the file's, word for word (argv[0] as written, not resolved).
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids["loc"])).expect("cmdline");
    let argv: Vec<&[u8]> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(argv, [b"sleep".as_slice(), b"1000"], "{cmdline:?}");
    assert_eq!(p.ps_map()["loc"]["launcher"], "local");
    assert!(
        p.fake_log().is_empty(),
        "the local launcher ran mirrord: {:?}",
        p.fake_log()
    );
}
