//! Issue 13: session status, `run` and `events`, with the fake mirrord serving the session API
//! like the real intproxy (`$HOME/.mirrord/sessions/<id>.sock`, `/info`, `/events`), HOME in a
//! temp dir, real processes throughout.
//!
//! * `ps` shows `connected` and the target mirrord resolved; requests to the fake's stolen
//!   port are counted in `ps --format json`;
//! * a socket removed while the process runs is `lost` and the restart policy restarts it;
//! * a stale socket file (nobody answering, or an earlier run's) is never a session;
//! * `run` runs a command with a service's mirrord config, incoming off unless
//!   `--service-ports`, exit code propagated, the running service untouched;
//! * `events --json` streams an edit, a crash, a broken save and a fixed save in order and
//!   ends when `down` ends the supervisor.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Project, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A project whose services get HOME = a temp dir, the intproxy and a stolen port.
struct Sessions {
    p: Project,
    home: tempfile::TempDir,
}

impl Sessions {
    fn new(name: &str) -> Sessions {
        Sessions {
            p: Project::new(name),
            home: tempfile::tempdir().expect("home"),
        }
    }

    fn sessions_dir(&self) -> PathBuf {
        self.home.path().join(".mirrord").join("sessions")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.p.command(args);
        cmd.env("HOME", self.home.path())
            .env("FAKE_MIRRORD_INTPROXY", "1")
            .env("FAKE_MIRRORD_STEAL_PORT", "0");
        cmd
    }

    fn ok(&self, cmd: &mut Command) -> String {
        let out = cmd.stdin(Stdio::null()).output().expect("run mirrord-up");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `up -d`; its stderr (where it says how to reach split-mode services).
    fn up(&self) -> String {
        let out = self
            .command(&["up", "-d"])
            .stdin(Stdio::null())
            .output()
            .expect("up -d");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        stderr
    }

    /// `name → row` of `ps --format json` (PGIDs remembered for the cleanup).
    fn ps(&self) -> std::collections::BTreeMap<String, Value> {
        self.p.ps_map()
    }

    /// The newest intproxy record of `service` in the fake's log.
    fn intproxy(&self, service: &str) -> Option<Value> {
        self.p
            .fake_log()
            .into_iter()
            .rev()
            .find(|r| r["intproxy_pid"].is_number() && r["service"] == service)
    }
}

impl Drop for Sessions {
    /// The intproxies of `run`: nothing marks them as the project's (`run` starts no service),
    /// and the fake's lingers ten minutes (a real one ends about 5 s after its layer leaves; the
    /// fake has no layer). Each is killed by the PID the fake logged, while that PID is still a
    /// fake intproxy; the project's own processes go with `Project`'s drop, after this.
    fn drop(&mut self) {
        for rec in self.p.fake_log() {
            let Some(pid) = rec["intproxy_pid"].as_i64() else {
                continue;
            };
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut args = argv.split(|b| *b == 0);
            let fake = args
                .next()
                .is_some_and(|a| String::from_utf8_lossy(a).contains("fake-mirrord"));
            if fake && args.next() == Some(b"intproxy".as_slice()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn yaml(restart: &str) -> String {
    format!(
        "services:\n  api:\n    target:\n      path: deployment/api\n      namespace: staging\n{restart}    env:\n      override:\n        FOO: from-api\n    run: {{command: [\"sleep\", \"1000\"]}}\n"
    )
}

/// One HTTP request to the stolen port; the fake answers `ok`.
fn request(port: u64, path: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nhost: api:8080\r\n\r\n").expect("send");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
}

fn session_of(s: &Sessions, service: &str) -> Value {
    s.ps().remove(service).unwrap_or(Value::Null)
}

#[test]
fn ps_shows_the_connected_session_and_counts_requests_to_the_stolen_port() {
    let s = Sessions::new("sessok");
    s.p.write_yaml(&yaml(""));
    let told = s.up();
    assert!(
        told.contains("to reach api: requests with `baggage: mirrord-session=tester`"),
        "up -d did not say how to reach api:\n{told}"
    );
    wait_until("api's session is connected", WAIT, || {
        session_of(&s, "api")["session"] == "connected"
    });
    // A no-op `up -d` to the running supervisor says it too (from the state it read before
    // asking: `nothing to do` changed nothing).
    let again = s.up();
    assert!(
        again.contains("to reach api: requests with `baggage: mirrord-session=tester`"),
        "a no-op up -d did not say how to reach api:\n{again}"
    );
    let row = session_of(&s, "api");
    assert_eq!(
        row["route_header"], "baggage: mirrord-session=tester",
        "{row:#}"
    );
    assert_eq!(row["session_target"], "deployment/api", "{row:#}");
    assert_eq!(row["session_namespace"], "staging", "{row:#}");
    assert_eq!(row["operator"], false, "{row:#}");
    assert_eq!(row["incoming_requests"], 0, "{row:#}");
    let ip = s.intproxy("api").expect("intproxy record");
    let id = row["session_id"].as_str().expect("session id");
    assert!(
        ip["session_socket"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("{id}.sock"))),
        "{ip} vs {id}"
    );
    let port = ip["steal_port"].as_u64().expect("stolen port");
    assert_eq!(row["ports"][0]["port"], port, "{row:#}");
    assert_eq!(row["ports"][0]["mode"], "steal", "{row:#}");
    // The table: SESSION column; --wide: id, resolved target, ports, route.
    let table = s.ok(&mut s.command(&["ps"]));
    assert!(table.lines().next().unwrap().contains("SESSION"), "{table}");
    assert!(table.contains("connected"), "{table}");

    for n in 0..5 {
        request(port, &format!("/orders/{n}"));
    }
    wait_until("ps counts 5 incoming requests", WAIT, || {
        session_of(&s, "api")["incoming_requests"] == 5
    });
    let row = session_of(&s, "api");
    assert!(row["last_request_age_s"].as_u64().is_some(), "{row:#}");
    let wide = s.ok(&mut s.command(&["ps", "--wide"]));
    for needle in [
        id,
        "deployment/api (staging)",
        &format!("{port}/steal"),
        "5 (last",
    ] {
        assert!(wide.contains(needle), "`{needle}` not in:\n{wide}");
    }
    // The split-mode route (default header filter on the `tester` key).
    assert!(
        wide.contains("baggage: mirrord-session=tester"),
        "no route header in:\n{wide}"
    );
}

#[test]
fn a_removed_socket_is_a_lost_session_and_the_policy_restarts_the_service() {
    let s = Sessions::new("sesslost");
    s.p.write_yaml(&yaml("    restart: on-failure\n"));
    s.up();
    wait_until("api's session is connected", WAIT, || {
        session_of(&s, "api")["session"] == "connected"
    });
    let before = session_of(&s, "api");
    let old_pid = before["pid"].as_i64().expect("pid");
    let old_id = before["session_id"].as_str().expect("id").to_owned();
    let socket = s.sessions_dir().join(format!("{old_id}.sock"));
    std::fs::remove_file(&socket).expect("remove the session socket");
    wait_until("ps shows the session lost", WAIT, || {
        let row = session_of(&s, "api");
        row["session"] == "lost" || row["policy_restarts"] == 1
    });
    wait_until(
        "the restart policy started api again, connected",
        WAIT,
        || {
            let row = session_of(&s, "api");
            row["session"] == "connected" && row["pid"].as_i64().is_some_and(|p| p != old_pid)
        },
    );
    let row = session_of(&s, "api");
    assert_eq!(row["policy_restarts"], 1, "{row:#}");
    assert_ne!(row["session_id"], old_id.as_str(), "{row:#}");
    // The loss, with its reason, is in the journal `logs` shows.
    let logs = s.ok(&mut s.command(&["logs", "api"]));
    assert!(
        logs.contains("session lost: the session API socket")
            && logs.contains("disappeared while the process runs"),
        "{logs}"
    );
}

#[test]
fn a_stale_socket_is_never_a_session() {
    let s = Sessions::new("sessstale");
    s.p.write_yaml(&yaml(""));
    let dir = s.sessions_dir();
    std::fs::create_dir_all(&dir).expect("sessions dir");
    // An earlier run's socket file, nobody behind it.
    let earlier = dir.join("0f0f0f0f-0000-4000-8000-000000000000.sock");
    drop(std::os::unix::net::UnixListener::bind(&earlier).expect("bind"));
    // This run's id, but the file is a stale one whose listener never answers.
    let id = "3b1e8c9a-7d2f-4e6a-9c1b-5a4d3e2f1a0b";
    let stale = dir.join(format!("{id}.sock"));
    let listener = std::os::unix::net::UnixListener::bind(&stale).expect("bind");
    let mut up = s.command(&["up", "-d"]);
    // No intproxy: nothing serves this session's API (mirrord-up passes no MIRRORD_* of
    // its own environment to a service, so `MIRRORD_API=false` would not reach it).
    up.env_remove("FAKE_MIRRORD_INTPROXY")
        .env("FAKE_MIRRORD_SESSION_ID", id);
    s.ok(&mut up);
    // Three attempts of the watcher reach the stale listener, which hangs up without a word.
    for _ in 0..3 {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let _ = conn.read(&mut buf);
    }
    let row = session_of(&s, "api");
    assert_eq!(row["session"], "connecting", "{row:#}");
    assert_eq!(row["session_id"], id, "{row:#}");
    drop(listener);
    assert!(earlier.exists() && stale.exists());
    assert_ne!(session_of(&s, "api")["session"], "connected");
}

/// The path of the files `run` handed to the fake (its `-f`, or the resolved config).
fn incoming_mode_of_last_exec(p: &Project, marker: &str) -> String {
    p.fake_log()
        .into_iter()
        .rev()
        .find(|r| {
            r["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains(marker)))
            })
        })
        .and_then(|r| r["incoming_mode"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no exec with {marker} in {:#?}", p.fake_log()))
}

#[test]
fn run_executes_a_command_in_the_service_context_and_leaves_the_service_alone() {
    let s = Sessions::new("sessrun");
    s.p.write_yaml(&yaml(""));
    s.up();
    wait_until("api's session is connected", WAIT, || {
        session_of(&s, "api")["session"] == "connected"
    });
    let before = session_of(&s, "api");
    let out = s
        .command(&[
            "run",
            "api",
            "--",
            "sh",
            "-c",
            "echo FOO=$FOO; read line; echo got=$line; exit 7 # r1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(b"hello\n")?;
            child.wait_with_output()
        })
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FOO=from-api"), "{stdout}");
    assert!(stdout.contains("got=hello"), "stdin not passed: {stdout}");
    assert_eq!(incoming_mode_of_last_exec(&s.p, "# r1"), "off");

    let out = s
        .command(&[
            "run",
            "--service-ports",
            "api",
            "--",
            "sh",
            "-c",
            "exit 0 # r2",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(incoming_mode_of_last_exec(&s.p, "# r2"), "steal");

    let after = session_of(&s, "api");
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(after["restarts"], before["restarts"]);
    assert_eq!(after["session"], "connected");
}

#[test]
fn run_works_without_a_running_project_and_refuses_an_unknown_service() {
    let s = Sessions::new("sessrun2");
    s.p.write_yaml(&yaml(""));
    let out = s
        .command(&["run", "api", "--", "sh", "-c", "echo FOO=$FOO"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FOO=from-api"));
    let out = s
        .command(&["run", "nope", "--", "true"])
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
}

/// The JSON events `events --json` printed so far.
fn printed_events(live: &common::Live) -> Vec<Value> {
    live.text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn position(events: &[Value], from: usize, what: impl Fn(&Value) -> bool) -> usize {
    events[from..]
        .iter()
        .position(what)
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("not found after #{from} in {events:#?}"))
}

#[test]
fn events_json_streams_an_edit_a_crash_a_broken_and_a_fixed_save_and_ends_with_down() {
    let s = Sessions::new("sessevents");
    let restart = "    restart: on-failure\n";
    s.p.write_yaml(&yaml(restart));
    let t0 = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    s.up();
    // From before `up`: the supervisor's ring replays what the stream missed (no race).
    let mut live = common::Live::start(&s.p, &["events", "--json", "--since", &t0]);
    live.wait_for("\"type\":\"session_connected\"");

    // An edit: api gets a new env value and is restarted with it.
    s.p.write_yaml(&yaml(restart).replace("from-api", "edited"));
    live.wait_for("\"type\":\"reload_applied\"");
    wait_until("api is connected again", WAIT, || {
        session_of(&s, "api")["session"] == "connected"
    });
    // A crash: the restart policy schedules a restart.
    let pid = session_of(&s, "api")["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill api");
    live.wait_for("\"type\":\"restart_scheduled\"");
    // A broken save, then a fixed one.
    s.p.write_yaml("services:\n  api:\n    target: none\n    run: {command: [sleep\n");
    live.wait_for("\"type\":\"reload_failed\"");
    s.p.write_yaml(&yaml(restart));
    live.wait_for_n("\"type\":\"reload_applied\"", 2);

    s.ok(&mut s.command(&["down"]));
    assert_eq!(live.wait_exit(WAIT), Some(0), "{}", live.text());

    let events = printed_events(&live);
    let kind = |k: &'static str| move |e: &Value| e["type"] == k && e["service"].is_string();
    let first = position(&events, 0, kind("started"));
    // The edit's restart, then `reload applied` once the pass is done.
    let restarted = position(&events, first + 1, |e| {
        e["type"] == "started"
            && e["service"] == "api"
            && e["what"]
                .as_str()
                .is_some_and(|w| w.contains("config changed"))
    });
    let edit = position(&events, restarted, kind("reload_applied"));
    let exited = position(&events, edit, kind("exited"));
    assert!(
        events[exited]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("SIGKILL")),
        "{:#}",
        events[exited]
    );
    let scheduled = position(&events, exited, kind("restart_scheduled"));
    let broken = position(&events, scheduled, kind("reload_failed"));
    let b = &events[broken];
    assert!(
        b["file"]
            .as_str()
            .is_some_and(|f| f.ends_with("mirrord-up.yaml")),
        "{b:#}"
    );
    assert!(b["line"].as_u64().is_some(), "{b:#}");
    let fixed = position(&events, broken, kind("reload_applied"));
    assert!(fixed > broken);
    for e in &events {
        assert!(e["time"].is_string() && e["what"].is_string(), "{e:#}");
    }
    // The connected line (also what foreground `up` prints) says how to reach api.
    let connected = position(&events, 0, kind("session_connected"));
    assert!(
        events[connected]["what"]
            .as_str()
            .is_some_and(|w| w.contains("requests with `baggage: mirrord-session=tester`")),
        "{:#}",
        events[connected]
    );
    // `down` stopped api, told on the stream before it ended.
    position(&events, fixed, |e| {
        e["type"] == "stopped" && e["service"] == "api"
    });
}

#[test]
fn a_container_service_says_why_no_session_is_shown() {
    let s = Sessions::new("sesscontainer");
    s.p.write_yaml(
        "services:\n  web:\n    target: none\n    run: {type: container, command: [\"sleep\", \"1000\"]}\n",
    );
    s.up();
    let row = session_of(&s, "web");
    assert_eq!(row["status"], "running", "{row:#}");
    assert_eq!(row["session"], "–", "{row:#}");
    assert!(
        row["session_note"]
            .as_str()
            .is_some_and(|n| n.contains("sidecar")),
        "{row:#}"
    );
    // No socket on this host for it, and `up -d` names no route for it.
    assert!(
        !s.sessions_dir().exists()
            || std::fs::read_dir(s.sessions_dir())
                .unwrap()
                .next()
                .is_none()
    );
}
