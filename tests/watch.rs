//! `watch:` (issue #16) with real processes and the faithful fake mirrord: saves of watched
//! files restart the app inside its warm session (the fake `mirrord exec` keeps its PID, one
//! exec), `restart-session` makes a new session, ignored paths, `.gitignore`d files and the
//! state directory restart nothing, a burst is one restart, a save during a restart is not
//! lost, and the `local` launcher restarts the app directly.
//!
//! Every wait ends on an event with a deadline (a line in a file the app writes, a counter the
//! supervisor writes, a pending signal in `/proc`); nothing sleeps to synchronise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Project, Running, alive, fake_mirrord, mirrord_up, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The app: appends its PID to `pids` when it starts; on SIGTERM appends it to `stopping`
/// and, when `fifo` is given, exits only once a line can be read from it. The trap is set
/// before the PID is written: an app seen started is one a restart finds in its trap (else a
/// loaded machine could stop it between the two, and it would never say it is stopping). The
/// trap kills the background `sleep` itself, with SIGKILL: a SIGTERM that reaches the child
/// between `sh`'s fork and its exec is caught by the trap the child inherited and lost at the
/// exec, and the runner would wait the whole grace for that `sleep` (seen under load).
fn app(files: &Files, hold_on_stop: bool) -> Vec<String> {
    let hold = if hold_on_stop {
        format!("read x < '{}';", files.fifo.display())
    } else {
        String::new()
    };
    let script = format!(
        "trap 'echo $$ >> \"{stopping}\"; kill -KILL $! 2>/dev/null; {hold} exit 0' TERM; echo $$ >> '{pids}'; sleep 1000 & wait",
        pids = files.pids.display(),
        stopping = files.stopping.display(),
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Files of the test outside the project's directory (so outside any watch).
struct Files {
    pids: PathBuf,
    stopping: PathBuf,
    fifo: PathBuf,
    execs: PathBuf,
}

impl Files {
    fn new(p: &Project) -> Files {
        let out = p.dir.parent().expect("tmp root").to_path_buf();
        Files {
            pids: out.join("pids"),
            stopping: out.join("stopping"),
            fifo: out.join("fifo"),
            execs: out.join("execs"),
        }
    }

    fn lines(path: &Path) -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn pids(&self) -> Vec<i32> {
        Files::lines(&self.pids)
    }

    fn execs(&self) -> Vec<i32> {
        Files::lines(&self.execs)
    }

    /// Waits until `n` apps have started and the last one runs.
    fn wait_apps(&self, n: usize) -> Vec<i32> {
        let mut pids = Vec::new();
        wait_until(&format!("{n} apps have started"), WAIT, || {
            pids = self.pids();
            pids.len() >= n && pids.last().is_some_and(|p| alive(*p))
        });
        assert_eq!(pids.len(), n, "more apps than expected: {pids:?}");
        pids
    }
}

fn yaml(name: &str, command: &[String], watch: &str, extra: &str) -> String {
    format!(
        "services:\n  {name}:\n    target: none\n    stop_timeout: 20\n{extra}    watch: {watch}\n    run: {{command: {}}}\n",
        serde_json::to_string(command).unwrap()
    )
}

/// `up -d` with the exec counter of the fake.
fn up(p: &Project, files: &Files) {
    let mut cmd = p.command(&["up", "-d"]);
    cmd.env("FAKE_MIRRORD_EXEC_COUNT", &files.execs);
    let out = Running::start(cmd, "mirrord-up up -d".into()).wait();
    assert_eq!(out.code, Some(0), "up -d: {out}");
    // Remember the groups for the cleanup.
    let _ = p.ps();
}

fn watch_record(state_dir: &Path, service: &str) -> Value {
    std::fs::read_to_string(state_dir.join("services").join(service).join("watch.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Waits until the last restart by watch names `path`; the record.
fn wait_cause(state_dir: &Path, service: &str, path: &str) -> Value {
    let want = format!("source changed: {path}");
    let mut rec = Value::Null;
    let deadline = std::time::Instant::now() + WAIT;
    while rec["last_cause"].as_str() != Some(want.as_str()) {
        rec = watch_record(state_dir, service);
        if std::time::Instant::now() > deadline {
            let journal = std::fs::read_to_string(state_dir.join("events.log")).unwrap_or_default();
            let sup = std::fs::read_to_string(state_dir.join("supervisor.log")).unwrap_or_default();
            panic!(
                "no restart by watch for {path}: record {rec}, events:\n{journal}\nsupervisor:\n{sup}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rec
}

fn save(p: &Project, rel: &str, text: &str) {
    let path = p.dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn service_pid(p: &Project, name: &str) -> i32 {
    p.pids()[name]
}

// 1 ------------------------------------------------------------------------------------------

/// Must show 1: 20 saves → 20 new app PIDs, one session (the fake `mirrord exec`'s PID, which
/// is the runner's, stays; one exec).
#[test]
fn twenty_saves_restart_the_app_twenty_times_in_one_session() {
    let p = Project::new("warm");
    let files = Files::new(&p);
    save(&p, "src/main.go", "package main // 0");
    p.write_yaml(&yaml(
        "api",
        &app(&files, false),
        "{paths: [\"src/**/*.go\"], debounce: 50ms}",
        "",
    ));
    up(&p, &files);
    files.wait_apps(1);
    let session = service_pid(&p, "api");
    assert_eq!(
        files.execs(),
        vec![session],
        "one exec, whose PID is the service's"
    );
    for i in 1..=20 {
        save(&p, "src/main.go", &format!("package main // {i}"));
        files.wait_apps(i + 1);
    }
    let pids = files.pids();
    let distinct: std::collections::BTreeSet<i32> = pids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        21,
        "every restart is a new app process: {pids:?}"
    );
    assert!(pids[..20].iter().all(|p| !alive(*p)), "old apps are gone");
    assert_eq!(service_pid(&p, "api"), session, "the session kept its PID");
    assert!(alive(session));
    assert_eq!(files.execs(), vec![session], "exec count stays 1");
    let rec = wait_cause(&p.state_dir, "api", "src/main.go");
    assert_eq!(rec["restarts"], 20, "{rec}");
    // `ps` tells the restarts by watch and their cause.
    let row = &p.ps_map()["api"];
    assert_eq!(row["watch_restarts"], 20, "{row}");
    assert_eq!(row["watch_last_cause"], "source changed: src/main.go");
    let table = p.ok(&["ps", "--wide"]).stdout;
    assert!(table.contains("+20 watch"), "{table}");
    assert!(table.contains("source changed: src/main.go"), "{table}");
    let journal = std::fs::read_to_string(p.state_dir.join("events.log")).unwrap_or_default();
    assert!(
        journal.contains("restarting the app in its session"),
        "{journal}"
    );
}

/// Must show 1: `restart-session` makes a new `mirrord exec` each time.
#[test]
fn restart_session_makes_a_new_session_each_time() {
    let p = Project::new("cold");
    let files = Files::new(&p);
    save(&p, "app.py", "0");
    p.write_yaml(&yaml(
        "api",
        &app(&files, false),
        "{paths: [\"*.py\"], debounce: 50ms, action: restart-session}",
        "",
    ));
    up(&p, &files);
    files.wait_apps(1);
    let mut sessions = vec![service_pid(&p, "api")];
    for i in 1..=3 {
        save(&p, "app.py", &i.to_string());
        files.wait_apps(i + 1);
        let mut pid = 0;
        wait_until("the service runs under a new PID", WAIT, || {
            pid = p.pids().get("api").copied().unwrap_or(0);
            !sessions.contains(&pid) && alive(pid)
        });
        sessions.push(pid);
    }
    // With no runner, the app is the session's process (exec'd by the fake).
    assert_eq!(
        files.pids(),
        sessions,
        "each app is a new session's process"
    );
    assert_eq!(files.execs(), sessions, "one exec per session");
    assert_eq!(watch_record(&p.state_dir, "api")["restarts"], 3);
}

// 2 ------------------------------------------------------------------------------------------

/// Must show 2: ignored globs, `.gitignore`d files and the state directory (inside the watched
/// tree here: the service's own log is written there) restart nothing.
#[test]
fn ignored_paths_gitignored_files_and_the_state_dir_restart_nothing() {
    let p = Project::new("quiet");
    let files = Files::new(&p);
    let state_root = p.dir.join(".state");
    std::fs::write(p.dir.join(".gitignore"), "*.log\nbuild/\n").unwrap();
    p.write_yaml(&yaml(
        "api",
        &app(&files, false),
        "{paths: [\"**\"], ignore: [\"tmp/**\", \"*.swp\"], debounce: 50ms}",
        "",
    ));
    let cmd = |args: &[&str]| -> Command {
        let mut c = mirrord_up();
        c.current_dir(&p.dir)
            .arg("-f")
            .arg(&p.yaml)
            .arg("--state-dir")
            .arg(&state_root)
            .arg("--mirrord-bin")
            .arg(fake_mirrord())
            .args(["-k", "tester"])
            .args(args)
            .env("FAKE_MIRRORD_LOG", &p.fake_log)
            .env("FAKE_MIRRORD_EXEC_COUNT", &files.execs);
        c
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Command);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Running::start((self.0)(&["down", "-t", "1", "--force"]), "down".into()).wait();
        }
    }
    let _down = Down(&cmd);
    let out = Running::start(cmd(&["up", "-d"]), "up -d".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    let first = files.wait_apps(1);
    let state_dir = state_root.join("quiet");
    assert!(state_dir.join("logs").is_dir());

    save(&p, "tmp/a.txt", "x");
    save(&p, "notes.swp", "x");
    save(&p, "debug.log", "x");
    save(&p, "build/out.bin", "x");
    save(&p, ".git/index", "x");
    std::fs::write(state_dir.join("logs").join("extra.txt"), "x").unwrap();
    // A sentinel: the first restart must be for it.
    save(&p, "main.py", "x");
    let rec = wait_cause(&state_dir, "api", "main.py");
    assert_eq!(rec["restarts"], 1, "only the sentinel restarted: {rec}");
    let pids = files.wait_apps(2);
    assert_eq!(pids[0], first[0]);
}

/// Must show 2: a burst of 50 writes (a `git checkout`) is one restart.
#[test]
fn a_burst_of_fifty_writes_restarts_once() {
    let p = Project::new("burst");
    let files = Files::new(&p);
    p.write_yaml(&yaml(
        "api",
        &app(&files, false),
        "{paths: [\"src/**\"], debounce: 300ms}",
        "",
    ));
    up(&p, &files);
    files.wait_apps(1);
    for i in 0..50 {
        save(&p, &format!("src/f{i}.go"), &i.to_string());
    }
    files.wait_apps(2);
    // A later save names its own restart: if the burst had made two, the count would show it.
    wait_until("the burst's restart is recorded", WAIT, || {
        watch_record(&p.state_dir, "api")["restarts"] == 1
    });
    save(&p, "src/sentinel.go", "x");
    let rec = wait_cause(&p.state_dir, "api", "src/sentinel.go");
    assert_eq!(rec["restarts"], 2, "the burst was one restart: {rec}");
    files.wait_apps(3);
}

/// The signals pending for the whole process `pid` (`ShdPnd` of `/proc/<pid>/status`).
fn pending(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Lets the app blocked in its SIGTERM trap exit (it reads a line from the FIFO).
fn release(files: &Files) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut fifo = None;
    wait_until("the stopping app opens its FIFO", WAIT, || {
        fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&files.fifo)
            .ok();
        fifo.is_some()
    });
    fifo.unwrap().write_all(b"go\n").unwrap();
}

/// Must show 2: a save while the app is being stopped for a restart is not lost: one more
/// restart follows.
#[test]
fn a_save_during_a_restart_is_not_lost() {
    let p = Project::new("during");
    let files = Files::new(&p);
    nix::unistd::mkfifo(&files.fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p.write_yaml(&yaml(
        "api",
        &app(&files, true),
        "{paths: [\"src/**\"], debounce: 50ms}",
        "",
    ));
    up(&p, &files);
    files.wait_apps(1);
    let runner = service_pid(&p, "api");
    save(&p, "src/a.go", "1");
    // The first app is stopping (held in its trap): the restart is under way.
    wait_until("the first app is stopping", WAIT, || {
        Files::lines(&files.stopping).len() == 1
    });
    save(&p, "src/b.go", "2");
    // The supervisor has told the runner again while the restart goes on.
    let usr1 = 1u64 << (nix::libc::SIGUSR1 - 1);
    wait_until(
        "the second restart request reaches the runner",
        WAIT,
        || pending(runner) & usr1 != 0,
    );
    release(&files);
    // The pending request restarts the second app too. The runner's lines in the service's
    // log count its starts and restarts (the second app may be stopped before its shell has
    // set its trap and written its PID; when held in the trap, it is released).
    let log = p.state_dir.join("logs").join("api.log");
    let count = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(what)
            .count()
    };
    wait_until("the second restart is under way or done", WAIT, || {
        count("runner: app started") == 3 || Files::lines(&files.stopping).len() == 2
    });
    if count("runner: app started") < 3 {
        release(&files);
    }
    wait_until("the third app has started", WAIT, || {
        count("runner: app started") == 3
    });
    assert_eq!(
        count("runner: restarting the app"),
        2,
        "one more restart, no more"
    );
    let pids = files.pids();
    wait_until("the last app runs", WAIT, || {
        files.pids().last().is_some_and(|p| alive(*p))
    });
    assert_eq!(Files::lines(&files.stopping)[0], pids[0]);
    assert_eq!(service_pid(&p, "api"), runner, "same session throughout");
    assert_eq!(files.execs(), vec![runner]);
    assert_eq!(pending(runner) & usr1, 0, "nothing more is pending");
}

// local launcher --------------------------------------------------------------------------------

/// With `--launcher local` the runner runs the app directly: saves restart the app, the
/// service's process (the runner) stays.
#[test]
fn local_launcher_restarts_the_app_under_the_runner() {
    let mut p = Project::new("local");
    p.globals = vec!["--launcher".into(), "local".into()];
    let files = Files::new(&p);
    p.write_yaml(&yaml(
        "api",
        &app(&files, false),
        "{paths: [\"*.js\"], debounce: 50ms}",
        "",
    ));
    up(&p, &files);
    files.wait_apps(1);
    let runner = service_pid(&p, "api");
    for i in 1..=3 {
        save(&p, "index.js", &i.to_string());
        files.wait_apps(i + 1);
    }
    assert_eq!(service_pid(&p, "api"), runner);
    assert!(files.execs().is_empty(), "no mirrord at all");
}

// the runner's fidelity ---------------------------------------------------------------------------

/// The runner ends as the app ends (its exit code), so the restart policy and `ps` see the
/// app's exit; `down` stops the app (SIGTERM forwarded) and nothing is left.
#[test]
fn runner_passes_the_exit_status_and_down_stops_the_app() {
    let p = Project::new("fidelity");
    let files = Files::new(&p);
    let script = format!(
        "echo $$ >> '{}'; if [ -e '{}' ]; then exit 7; fi; trap 'exit 0' TERM; sleep 1000 & wait",
        files.pids.display(),
        p.dir.join("die").display()
    );
    p.write_yaml(&yaml(
        "api",
        &["sh".into(), "-c".into(), script],
        "{paths: [\"*.go\"], debounce: 50ms}",
        "",
    ));
    up(&p, &files);
    let first = files.wait_apps(1)[0];
    let runner = service_pid(&p, "api");
    // The app starts as it would without the runner: no signal blocked.
    let status = std::fs::read_to_string(format!("/proc/{first}/status")).unwrap();
    assert!(
        status.lines().any(|l| l == "SigBlk:\t0000000000000000"),
        "{status}"
    );
    // `down` forwards SIGTERM: the app and the runner are gone.
    p.ok(&["down", "-t", "5"]);
    wait_until("the app and its runner are gone", WAIT, || {
        !alive(first) && !alive(runner)
    });
    // An app that exits 7 on its own: the runner exits 7 (no restart policy: exited(7)).
    std::fs::write(p.dir.join("die"), "").unwrap();
    up(&p, &files);
    wait_until("the service has exited with the app's code", WAIT, || {
        p.ps_map()
            .get("api")
            .and_then(|r| r["last_exit"]["code"].as_i64())
            == Some(7)
    });
}

// the file -----------------------------------------------------------------------------------------

/// `check` refuses bad `watch:` values with the file, line and column, and the key path.
#[test]
fn bad_watch_settings_are_refused_with_their_position() {
    let p = Project::new("badwatch");
    let cases: &[(&str, &str, &str)] = &[
        (
            "{paths: [\"src/[*.go\"]}",
            "services.api.watch.paths",
            "invalid glob",
        ),
        (
            "{paths: []}",
            "services.api.watch.paths",
            "at least one glob",
        ),
        (
            "{paths: [\"*.go\"], action: reload}",
            "services.api.watch.action",
            "restart-session",
        ),
        (
            "{paths: [\"*.go\"], debounce: -1}",
            "services.api.watch.debounce",
            "duration",
        ),
        (
            "{paths: [\"*.go\"], bogus: 1}",
            "services.api.watch",
            "unknown field `bogus`",
        ),
    ];
    for (watch, key, message) in cases {
        p.write_yaml(&format!(
            "services:\n  api:\n    target: none\n    watch: {watch}\n    run: {{command: [sleep, \"1\"]}}\n"
        ));
        let out = p.run(&["check"]);
        assert_eq!(out.code, Some(1), "{watch}: {out}");
        assert!(out.stderr.contains(key), "{watch}: no {key}: {out}");
        assert!(out.stderr.contains(message), "{watch}: no {message}: {out}");
        assert!(
            out.stderr.contains("mirrord-up.yaml:4:"),
            "{watch}: no position: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    // `action: restart` needs the app inside the session: not with `run.type: container`.
    p.write_yaml(
        "services:\n  api:\n    target: none\n    watch:\n      paths: [\"*.go\"]\n    run:\n      type: container\n      command: [docker, run, x]\n",
    );
    let out = p.run(&["check"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("services.api.watch"), "{out}");
    assert!(out.stderr.contains("restart-session"), "{out}");
    p.write_yaml(
        "services:\n  api:\n    target: none\n    watch:\n      paths: [\"*.go\"]\n      action: restart-session\n    run:\n      type: container\n      command: [docker, run, x]\n",
    );
    p.ok(&["check"]);
}

/// `check --compat` lists `watch` as an extension.
#[test]
fn check_compat_lists_watch() {
    let p = Project::new("compatwatch");
    p.write_yaml(
        "services:\n  api:\n    target: none\n    watch: {paths: [\"src/**\"], ignore: [\"*.tmp\"], debounce: 200ms, action: restart-session}\n    run: {command: [sleep, \"1\"]}\n",
    );
    let out = p.run(&["check", "--compat"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.lines().any(|l| l == "  services.api.watch"),
        "{out}"
    );
}

/// Editing the globs or the debounce restarts nothing; adding the watch (a runner now runs
/// the app) restarts the service once.
#[test]
fn editing_the_watch_settings_does_not_restart_the_app() {
    let p = Project::new("hashwatch");
    let files = Files::new(&p);
    let cmd = app(&files, false);
    p.write_yaml(&format!(
        "services:\n  api:\n    target: none\n    run: {{command: {}}}\n",
        serde_json::to_string(&cmd).unwrap()
    ));
    up(&p, &files);
    files.wait_apps(1);
    let plain = service_pid(&p, "api");
    p.write_yaml(&yaml("api", &cmd, "{paths: [\"*.go\"]}", ""));
    // stop_timeout is part of the runner's command line: the yaml helper sets it.
    up(&p, &files);
    files.wait_apps(2);
    let watched = service_pid(&p, "api");
    assert_ne!(
        watched, plain,
        "adding the watch starts the app under the runner"
    );
    for w in [
        "{paths: [\"*.go\", \"*.mod\"]}",
        "{paths: [\"*.go\"], ignore: [\"x/**\"], debounce: 1s}",
    ] {
        p.write_yaml(&yaml("api", &cmd, w, ""));
        let plan = p.run(&["plan"]);
        assert!(plan.stdout.contains("nothing to do"), "{w}: {plan}");
        up(&p, &files);
        assert_eq!(service_pid(&p, "api"), watched, "{w}: kept");
        assert_eq!(files.pids().len(), 2, "{w}: the app was not restarted");
    }
}

/// `depends_on.<x>.restart: true`: a dependent follows each restart by watch of `x` (through
/// the normal restart), while `x` keeps its session.
#[test]
fn restart_dependents_follow_a_restart_by_watch() {
    let p = Project::new("follow");
    let files = Files::new(&p);
    let cmd = app(&files, false);
    p.write_yaml(&format!(
        "services:\n  api:\n    target: none\n    stop_timeout: 20\n    watch: {{paths: [\"*.go\"], debounce: 50ms}}\n    run: {{command: {}}}\n  web:\n    target: none\n    depends_on: {{api: {{restart: true}}}}\n    run: {{command: [sleep, \"1000\"]}}\n  other:\n    target: none\n    depends_on: [api]\n    run: {{command: [sleep, \"1000\"]}}\n",
        serde_json::to_string(&cmd).unwrap()
    ));
    up(&p, &files);
    files.wait_apps(1);
    let before = p.pids();
    save(&p, "main.go", "x");
    files.wait_apps(2);
    let mut after = before.clone();
    wait_until("web runs under a new PID", WAIT, || {
        after = p.pids();
        after
            .get("web")
            .is_some_and(|w| *w != before["web"] && alive(*w))
    });
    assert_eq!(after["api"], before["api"], "api kept its session");
    assert_eq!(after["other"], before["other"], "a plain dependent stays");
    assert_eq!(files.execs().len(), 4, "one more exec: web's");
}
