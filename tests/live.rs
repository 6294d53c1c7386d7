//! The live loop with real processes: foreground `up` applying each save of the file, editor
//! save patterns, broken saves, SIGHUP/SIGINT, the detached supervisor with restart policies
//! and back-off, a supervisor killed by SIGKILL, readiness gating, `logs -f` across restarts,
//! and `restart|stop|start`.
//!
//! Every wait ends on an event (a line of output, a PID change, a status in `ps`) with a
//! deadline; nothing sleeps to synchronise.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Live, Project, alive, environ, group_empty, service, wait_until, yaml};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// A long-running `mirrord-up` (foreground `up`, `logs -f`) whose output is watched as it comes.

// ---------------------------------------------------------------------------------------------
// Helpers

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

/// Services running `sleep 1000` with `FOO` overridden; `value(name)` gives each one's value.
fn sleepers(svcs: &[String], value: impl Fn(&str) -> String, extra: &[&str]) -> String {
    yaml(
        &svcs
            .iter()
            .map(|s| {
                let env = format!("env: {{override: {{FOO: \"{}\"}}}}", value(s));
                let mut lines = vec![env.as_str()];
                lines.extend_from_slice(extra);
                service(s, common::SLEEP, &lines)
            })
            .collect::<Vec<_>>(),
    )
}

/// Waits until `ps` shows every one of `svcs` with a live PID; returns them.
fn wait_running(p: &Project, svcs: &[String]) -> BTreeMap<String, i32> {
    let mut pids = BTreeMap::new();
    wait_until("every service runs", WAIT, || {
        pids = p.pids();
        svcs.iter()
            .all(|s| pids.get(s).is_some_and(|pid| alive(*pid)))
    });
    pids
}

/// Waits until `service` runs under another PID than `old` and has started (its session said
/// `Ready!`: `ps` shows it running, no longer starting); the new PID.
fn wait_new_pid(p: &Project, service: &str, old: i32) -> i32 {
    let mut new = old;
    wait_until(&format!("{service} runs under a new PID"), WAIT, || {
        let rows = p.ps_map();
        let Some(row) = rows.get(service) else {
            return false;
        };
        new = row["pid"].as_i64().map_or(old, |p| p as i32);
        new != old && alive(new) && matches!(row["status"].as_str(), Some("running" | "ready"))
    });
    new
}

fn foo_of(pid: i32) -> Option<String> {
    environ(pid)?.get("FOO").cloned()
}

fn status_of(p: &Project, service: &str) -> String {
    p.ps_map()
        .get(service)
        .and_then(|r| r["status"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn execs_of(p: &Project, service: &str) -> usize {
    p.execs_by_service().get(service).map_or(0, Vec::len)
}

/// Writes the YAML the way editors that save atomically do: a temp file renamed over it.
fn save_by_rename(p: &Project, text: &str) {
    let tmp = p.dir.join(".mirrord-up.yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p.yaml).unwrap();
}

// 1 ------------------------------------------------------------------------------------------

#[test]
fn foreground_up_restarts_only_the_edited_service() {
    let p = Project::new("fg");
    let svcs = names("svc", 5);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &[]));
    let mut up = Live::start(&p, &["up"]);
    let before = wait_running(&p, &svcs);
    up.wait_for_n("started (pid", 5);

    p.write_yaml(&sleepers(
        &svcs,
        |s| if s == "svc3" { "two" } else { "one" }.into(),
        &[],
    ));
    let new = wait_new_pid(&p, "svc3", before["svc3"]);
    assert_eq!(
        foo_of(new).as_deref(),
        Some("two"),
        "new process, new config"
    );
    let after = p.pids();
    for s in svcs.iter().filter(|s| *s != "svc3") {
        assert_eq!(after[s], before[s], "{s} was touched");
        assert!(alive(before[s]));
    }
    assert!(!alive(before["svc3"]) || group_empty(before["svc3"]));
    up.wait_for("env.override.FOO");
    let text = up.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("svc3") && l.contains("started") && l.contains("env.override.FOO"))
        .unwrap_or_else(|| panic!("no reconcile line naming the field:\n{text}"));
    assert!(line.contains("config changed"), "{line}");
    // Service output is shown, prefixed by its name.
    assert_eq!(execs_of(&p, "svc3"), 2);

    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    for pid in after.values() {
        assert!(group_empty(*pid), "Ctrl-C left pid {pid}");
    }
}

// 2 ------------------------------------------------------------------------------------------

#[test]
fn editor_style_saves_each_apply_once() {
    let p = Project::new("saves");
    let svcs = names("svc", 3);
    let with = |v: &str| sleepers(&svcs, |s| if s == "svc2" { v } else { "one" }.into(), &[]);
    p.write_yaml(&with("one"));
    let up = Live::start(&p, &["up"]);
    let mut pids = wait_running(&p, &svcs);
    let others: Vec<(String, i32)> = pids
        .iter()
        .filter(|(s, _)| *s != "svc2")
        .map(|(s, p)| (s.clone(), *p))
        .collect();

    // Write a temp file, rename it over the YAML.
    save_by_rename(&p, &with("renamed"));
    let pid = wait_new_pid(&p, "svc2", pids["svc2"]);
    assert_eq!(foo_of(pid).as_deref(), Some("renamed"));
    pids.insert("svc2".into(), pid);
    assert_eq!(execs_of(&p, "svc2"), 2);

    // Truncate, pause (the empty file is a broken save), then write.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&p.yaml).unwrap();
        f.flush().unwrap();
        up.wait_for("reload failed");
        f.write_all(with("two-step").as_bytes()).unwrap();
    }
    let pid = wait_new_pid(&p, "svc2", pids["svc2"]);
    assert_eq!(foo_of(pid).as_deref(), Some("two-step"));
    pids.insert("svc2".into(), pid);
    assert_eq!(
        execs_of(&p, "svc2"),
        3,
        "the empty file must not restart it"
    );

    // A burst of saves within a few milliseconds: each is a complete write, so the first is
    // applied at once; the rest follow it within the debounce (50 ms after the save before
    // them) and are coalesced into one more apply, with the last content. At most two applies
    // for six saves. A machine so loaded that the gap between two saves reaches the debounce
    // splits the burst: each part may then be applied twice (the bound below follows).
    let debounce = Duration::from_millis(50);
    let mut bursts = 1;
    let mut last = Instant::now();
    for i in 0..6 {
        let text = if i < 5 {
            with(&format!("burst{i}"))
        } else {
            with("final")
        };
        p.write_yaml(&text);
        if last.elapsed() >= debounce && i > 0 {
            bursts += 1;
        }
        last = Instant::now();
    }
    wait_until("svc2 runs with the burst's last save", WAIT, || {
        let rows = p.ps_map();
        let Some(pid) = rows
            .get("svc2")
            .and_then(|row| row["pid"].as_i64())
            .map(|p| p as i32)
        else {
            return false;
        };
        alive(pid) && foo_of(pid).as_deref() == Some("final")
    });
    let execs = execs_of(&p, "svc2");
    assert!(
        (4..=3 + 2 * bursts).contains(&execs),
        "a burst must be applied at most twice (its first save and its last): {execs} execs \
         for {bursts} burst(s)"
    );
    for (s, old) in others {
        assert_eq!(p.pids()[&s], old, "{s} was touched");
    }
}

// 3 ------------------------------------------------------------------------------------------

#[test]
fn a_broken_save_changes_nothing_until_the_next_good_one() {
    let p = Project::new("broken");
    let svcs = names("svc", 3);
    let good = sleepers(&svcs, |_| "one".into(), &[]);
    p.write_yaml(&good);
    let up = Live::start(&p, &["up"]);
    let before = wait_running(&p, &svcs);

    // A YAML syntax error.
    p.write_yaml(&format!("{good}  svc9: [unclosed\n"));
    up.wait_for("reload failed");
    up.wait_for("mirrord-up.yaml:");
    // The pass records the error when it saves the state, just after printing it.
    wait_until("ps shows the reload error", WAIT, || {
        p.run(&["ps"]).stderr.contains("last reload failed")
    });
    let ps = p.run(&["ps"]);
    assert!(ps.stderr.contains("line "), "ps shows the position: {ps}");
    assert_eq!(p.pids(), before);

    // An unknown key, with its position.
    p.write_yaml(&good.replace(
        "svc2:\n    target: none",
        "svc2:\n    target: none\n    comand: [x]",
    ));
    up.wait_for("unknown field `comand`");
    wait_until("ps shows the new error", WAIT, || {
        p.run(&["ps"]).stderr.contains("unknown field `comand`")
    });
    let ps = p.run(&["ps"]);
    assert!(ps.stderr.contains("unknown field `comand`"), "{ps}");
    assert!(ps.stderr.contains("line 8 column 5"), "{ps}");
    assert_eq!(p.pids(), before, "a broken save restarted something");
    for s in &svcs {
        assert_eq!(execs_of(&p, s), 1, "{s}");
    }

    // The next good save is applied and clears the error.
    p.write_yaml(&sleepers(
        &svcs,
        |s| if s == "svc1" { "two" } else { "one" }.into(),
        &[],
    ));
    wait_new_pid(&p, "svc1", before["svc1"]);
    up.wait_for("valid again");
    wait_until("ps no longer shows an error", WAIT, || {
        !p.run(&["ps"]).stderr.contains("last reload failed")
    });
    assert_eq!(p.pids()["svc2"], before["svc2"]);
}

// 4 ------------------------------------------------------------------------------------------

#[test]
fn sighup_reapplies_in_the_detached_supervisor_and_sigint_stops_everything() {
    let p = Project::new("signals");
    let svcs = names("svc", 2);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &[]));
    // Detached, SIGHUP means "re-apply the file" (foreground, it means the terminal went
    // away: see sighup_ends_a_foreground_up_gracefully).
    p.ok(&["up", "--detach", "--no-watch"]);
    let before = wait_running(&p, &svcs);
    let sup = p.supervisor_pid().expect("a supervisor runs");

    p.write_yaml(&sleepers(
        &svcs,
        |s| if s == "svc1" { "two" } else { "one" }.into(),
        &[],
    ));
    kill(Pid::from_raw(sup), Signal::SIGHUP).unwrap();
    let new = wait_new_pid(&p, "svc1", before["svc1"]);
    assert_eq!(foo_of(new).as_deref(), Some("two"));
    assert_eq!(p.pids()["svc2"], before["svc2"]);
    assert_eq!(
        p.supervisor_pid(),
        Some(sup),
        "SIGHUP ended the detached supervisor"
    );
    p.ok(&["down"]);
    assert!(group_empty(new) && group_empty(before["svc2"]));

    let mut up = Live::start(&p, &["up", "--no-watch"]);
    let pids = wait_running(&p, &svcs);
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    assert!(group_empty(pids["svc1"]) && group_empty(pids["svc2"]));
    let ps = p.ps_map();
    assert_eq!(ps["svc1"]["status"], "stopped", "{ps:?}");
    assert!(p.supervisor_pid().is_none(), "the supervisor record stays");
}

#[test]
fn a_second_sigint_kills_a_slow_stop_at_once() {
    let p = Project::new("slowstop");
    p.write_yaml(&yaml(&[service(
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo armed; while :; do sleep 1; done",
        ],
        &["stop_timeout: 120"],
    )]));
    let mut up = Live::start(&p, &["up"]);
    let pid = wait_running(&p, &["stubborn".to_owned()])["stubborn"];
    up.wait_for("armed");
    up.signal(Signal::SIGINT);
    wait_until("the stop begins", WAIT, || {
        status_of(&p, "stubborn") == "stopping"
    });
    let second = Instant::now();
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    assert!(
        second.elapsed() < Duration::from_secs(60),
        "the second Ctrl-C waited for the grace period"
    );
    assert!(group_empty(pid), "the stubborn group survived");
    assert!(up.text().contains("killed"), "{}", up.text());
}

// 5 ------------------------------------------------------------------------------------------

#[test]
fn detached_supervisor_reloads_restarts_and_gives_up() {
    let p = Project::new("detached");
    let mut svcs = names("svc", 3);
    let file = |v: &str| {
        let mut s = sleepers(
            &svcs[..2],
            |s| if s == "svc1" { v } else { "one" }.into(),
            &[],
        );
        s.push_str(&service(
            "svc3",
            common::SLEEP,
            &["restart: on-failure", "env: {override: {FOO: one}}"],
        ));
        s.push_str(&service(
            "crasher",
            &["sh", "-c", "exit 3"],
            &["restart: on-failure", "max_restarts: 2"],
        ));
        s
    };
    p.write_yaml(&file("one"));
    p.ok(&["up", "--detach"]);
    let sup = p.supervisor_pid().expect("a supervisor is recorded");
    assert!(alive(sup));
    let before = wait_running(&p, &svcs);

    // An edit restarts exactly the edited service.
    p.write_yaml(&file("two"));
    let new1 = wait_new_pid(&p, "svc1", before["svc1"]);
    assert_eq!(foo_of(new1).as_deref(), Some("two"));
    assert_eq!(p.pids()["svc2"], before["svc2"]);
    assert_eq!(p.pids()["svc3"], before["svc3"]);

    // SIGKILL of an on-failure service: back-off visible, then restarted.
    kill(Pid::from_raw(before["svc3"]), Signal::SIGKILL).unwrap();
    wait_until("ps shows the back-off", WAIT, || {
        status_of(&p, "svc3").starts_with("backoff")
    });
    let row = &p.ps_map()["svc3"];
    assert_eq!(row["last_exit"]["signal"], "SIGKILL", "{row}");
    let new3 = wait_new_pid(&p, "svc3", before["svc3"]);
    let row = &p.ps_map()["svc3"];
    assert_eq!(row["restarts"], 1, "{row}");
    assert_eq!(row["policy_restarts"], 1, "{row}");
    // The edit restarted svc1, which is not a restart by the policy (ps's RESTARTS).
    let row1 = &p.ps_map()["svc1"];
    assert_eq!(row1["restarts"], 1, "{row1}");
    assert_eq!(row1["policy_restarts"], 0, "{row1}");
    assert!(
        row["last_reason"]
            .as_str()
            .unwrap()
            .contains("restart policy"),
        "{row}"
    );
    assert!(alive(new3));

    // The crash loop: two restarts with back-off, then failed; the supervisor idles meanwhile.
    let cpu_before = cpu_ticks(sup);
    wait_until("the crasher gives up", Duration::from_secs(30), || {
        status_of(&p, "crasher") == "failed"
    });
    let used = cpu_ticks(sup) - cpu_before;
    let row = &p.ps_map()["crasher"];
    assert_eq!(row["restarts"], 2, "{row}");
    assert_eq!(row["policy_restarts"], 2, "{row}");
    assert_eq!(row["last_exit"]["code"], 3, "{row}");
    assert!(
        row["last_reason"]
            .as_str()
            .unwrap()
            .contains("max_restarts"),
        "{row}"
    );
    assert_eq!(execs_of(&p, "crasher"), 3, "first start plus two restarts");
    // About 3 s of back-off; a spinning loop would burn ~300 ticks.
    assert!(
        used < 30,
        "the supervisor used {used} ticks during the back-off"
    );

    // `down` stops the supervisor too.
    svcs.push("crasher".into());
    p.ok(&["down", "-t", "1"]);
    wait_until("the supervisor exits", WAIT, || !alive(sup));
    for pid in [new1, before["svc2"], new3] {
        assert!(group_empty(pid));
    }
    assert!(p.ps().is_empty());
}

// 6 ------------------------------------------------------------------------------------------

#[test]
fn a_killed_supervisor_is_replaced_and_adopts_the_services() {
    let p = Project::new("adopt");
    let svcs = names("svc", 4);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &[]));
    p.ok(&["up", "--detach"]);
    let sup = p.supervisor_pid().unwrap();
    let before = wait_running(&p, &svcs);

    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    wait_until("the supervisor is gone", WAIT, || !alive(sup));
    for pid in before.values() {
        assert!(alive(*pid), "a service died with its supervisor");
    }

    let out = p.ok(&["up", "--detach"]);
    assert!(out.stdout.contains("nothing to do"), "{out}");
    let sup2 = p.supervisor_pid().unwrap();
    assert_ne!(sup2, sup);
    assert!(alive(sup2));
    assert_eq!(p.pids(), before, "adopted, not restarted");
    for s in &svcs {
        assert_eq!(execs_of(&p, s), 1, "{s} launched twice");
        assert_eq!(p.leaders_of(s).len(), 1, "{s} runs twice");
    }
    // The new supervisor watches the adopted services: a kill is noticed.
    kill(Pid::from_raw(before["svc1"]), Signal::SIGKILL).unwrap();
    wait_until("the exit is recorded", WAIT, || {
        status_of(&p, "svc1").starts_with("exited")
    });

    p.ok(&["down", "-t", "1"]);
    wait_until("the supervisor exits", WAIT, || !alive(sup2));
    for pid in before.values() {
        assert!(group_empty(*pid));
    }
    assert!(p.marked().is_empty());
}

// 7 ------------------------------------------------------------------------------------------

#[test]
fn a_dependent_starts_after_its_dependency_is_ready() {
    let p = Project::new("ready");
    p.write_yaml(&yaml(&[
        service("db", common::SLEEP, &[]),
        service(
            "api",
            common::SLEEP,
            &["depends_on: {db: {condition: ready}}"],
        ),
    ]));
    let mut cmd = p.command(&["up", "--detach"]);
    cmd.env("FAKE_MIRRORD_READY_DELAY_MS", "300");
    let out = common::Running::start(cmd, "up".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    // The fake logs each launch once it has printed `Ready!`.
    wait_until("both launches are logged", WAIT, || p.fake_log().len() == 2);
    let log = p.fake_log();
    let of = |s: &str| {
        log.iter()
            .find(|r| r["service"] == s)
            .unwrap_or_else(|| panic!("{s} not launched: {log:?}"))
            .clone()
    };
    let db_ready = of("db")["ready_ts_ms"].as_u64().unwrap();
    let api_start = of("api")["ts_ms"].as_u64().unwrap();
    assert!(
        api_start >= db_ready,
        "api started at {api_start}, before db printed Ready! at {db_ready}"
    );
    assert_eq!(p.ps_map()["db"]["status"], "ready");
}

// 8 ------------------------------------------------------------------------------------------

#[test]
fn logs_follow_keeps_printing_across_a_restart() {
    let p = Project::new("follow");
    let file = |v: &str| {
        yaml(&[service(
            "api",
            &["sh", "-c", "echo api-says-$FOO; exec sleep 1000"],
            &[&format!("env: {{override: {{FOO: {v}}}}}")],
        )])
    };
    p.write_yaml(&file("one"));
    p.ok(&["up", "--detach"]);
    let logs = Live::start(&p, &["logs", "-f", "api"]);
    logs.wait_for("api-says-one");
    let pid = p.pids()["api"];
    p.write_yaml(&file("two"));
    wait_new_pid(&p, "api", pid);
    logs.wait_for("api-says-two");
    assert!(
        logs.text().contains("api | api-says-two"),
        "{}",
        logs.text()
    );
}

// restart | stop | start ---------------------------------------------------------------------

#[test]
fn restart_stop_and_start_single_services() {
    let p = Project::new("control");
    let svcs = names("svc", 2);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &["restart: always"]));
    p.ok(&["up", "--detach"]);
    let before = wait_running(&p, &svcs);

    let out = p.ok(&["restart", "svc1"]);
    assert!(out.stderr.contains("restart requested"), "{out}");
    let new = p.pids()["svc1"];
    assert_ne!(new, before["svc1"]);
    assert!(alive(new));
    assert_eq!(p.pids()["svc2"], before["svc2"]);

    p.ok(&["stop", "svc1"]);
    assert_eq!(status_of(&p, "svc1"), "stopped", "{:?}", p.ps_map());
    assert!(group_empty(new));
    // `restart: always` does not bring back a service stopped on request: another pass of the
    // supervisor (this restart) looks at it again and leaves it.
    p.ok(&["restart", "svc2"]);
    assert_eq!(status_of(&p, "svc1"), "stopped");

    p.ok(&["start", "svc1"]);
    let started = p.pids()["svc1"];
    assert!(alive(started));

    let out = p.run(&["restart", "nope"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("no service named `nope`"), "{out}");
}

#[test]
fn one_supervisor_per_project_and_down_without_one() {
    let p = Project::new("single");
    let svcs = names("svc", 2);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &[]));
    p.ok(&["up", "--detach"]);
    let sup = p.supervisor_pid().unwrap();
    let before = wait_running(&p, &svcs);

    // A second `up --detach` goes through the running supervisor.
    let out = p.ok(&["up", "--detach"]);
    assert!(out.stdout.contains("nothing to do"), "{out}");
    assert_eq!(p.supervisor_pid(), Some(sup));
    let supervisors = common::live_processes()
        .into_iter()
        .filter(|s| {
            environ(s.pid).is_some_and(|e| {
                e.get("MIRRORD_UP_SUPERVISOR").map(String::as_str)
                    == Some(p.state_dir.to_str().unwrap())
            })
        })
        .count();
    assert_eq!(supervisors, 1, "a second supervisor was started");

    // A foreground `up` refuses, saying how to follow or stop the running one.
    let out = p.run(&["up"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("logs -f"), "{out}");
    assert!(out.stderr.contains("down"), "{out}");
    assert_eq!(p.pids(), before);

    // With the supervisor dead, `down` still stops everything.
    kill(Pid::from_raw(sup), Signal::SIGKILL).unwrap();
    wait_until("the supervisor is gone", WAIT, || !alive(sup));
    p.ok(&["down", "-t", "1"]);
    for pid in before.values() {
        assert!(group_empty(*pid));
    }
    assert!(p.ps().is_empty());
    assert!(p.supervisor_pid().is_none());
}

#[test]
fn up_wait_returns_once_ready_or_names_who_is_not() {
    let p = Project::new("wait");
    p.write_yaml(&yaml(&[
        service(
            "quick",
            &["sh", "-c", "echo up-and-ready; exec sleep 1000"],
            &["ready: {log: up-and-ready}"],
        ),
        service("never", common::SLEEP, &["ready: {log: will-not-happen}"]),
    ]));
    let out = p.run(&["up", "--detach", "--wait", "--wait-timeout", "1"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("never"),
        "names who is not ready: {out}"
    );
    assert!(!out.stderr.contains("quick not ready"), "{out}");
    let ps = p.ps_map();
    assert_eq!(ps["quick"]["status"], "ready", "{ps:?}");
    assert_eq!(ps["never"]["status"], "running", "{ps:?}");
}

#[test]
fn abort_on_exit_stops_everything_when_one_service_ends() {
    let p = Project::new("abort");
    p.write_yaml(&yaml(&[
        service("steady", common::SLEEP, &[]),
        service(
            "oneshot",
            &["sh", "-c", "exit 3"],
            &["restart: always", "depends_on: [steady]"],
        ),
    ]));
    let mut up = Live::start(&p, &["up", "--abort-on-exit"]);
    assert_eq!(up.wait_exit(WAIT), Some(1), "{}", up.text());
    let steady = p
        .fake_log()
        .iter()
        .find(|r| r["service"] == "steady")
        .and_then(|r| r["pid"].as_i64())
        .expect("steady was launched") as i32;
    assert!(
        group_empty(steady),
        "the other service outlived --abort-on-exit"
    );
    assert_eq!(
        execs_of(&p, "oneshot"),
        1,
        "no restart policy under --abort-on-exit"
    );
    assert!(
        up.text().contains("oneshot  exited (exit code 3)"),
        "{}",
        up.text()
    );
}

#[test]
fn a_save_right_after_up_detach_returns_is_applied() {
    let p = Project::new("quicksave");
    let svcs = names("svc", 2);
    p.write_yaml(&sleepers(&svcs, |_| "v0".into(), &[]));
    let out = p.ok(&["up", "--detach"]);
    // Save at once, before anything else (even `ps`) runs: the watch must already be in place.
    p.write_yaml(&sleepers(&svcs, |_| "v1".into(), &[]));
    let started = out
        .stderr
        .lines()
        .find(|l| l.starts_with("svc1"))
        .and_then(|l| l.split("(pid ").nth(1))
        .and_then(|r| r.split(')').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .unwrap_or_else(|| panic!("no pid for svc1 in {out}"));
    let new = wait_new_pid(&p, "svc1", started);
    assert_eq!(foo_of(new).as_deref(), Some("v1"));
}

#[test]
fn up_detach_with_a_broken_file_through_the_supervisor_fails_and_changes_nothing() {
    let p = Project::new("badforward");
    let svcs = names("svc", 2);
    p.write_yaml(&sleepers(&svcs, |_| "one".into(), &[]));
    p.ok(&["up", "--detach", "--no-watch"]);
    let before = wait_running(&p, &svcs);
    std::fs::write(&p.yaml, "services:\n  svc1: [\n").unwrap();
    let out = p.run(&["up", "--detach"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("mirrord-up.yaml"),
        "names the file: {out}"
    );
    assert!(out.stderr.contains("line "), "and the position: {out}");
    // Said once: as the answer, not also as a "reload failed" event.
    assert_eq!(
        out.stderr
            .matches("every service keeps running as it is")
            .count(),
        1,
        "{out}"
    );
    assert_eq!(out.stderr.matches("mirrord-up.yaml:").count(), 1, "{out}");
    assert_eq!(p.pids(), before);
}
