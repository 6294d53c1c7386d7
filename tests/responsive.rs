//! The live loop never blocks (issue 11, items 1–4): while a service waits for a dependency's
//! readiness, edits, `stop`, `up -d` of another service, `ci start`, `down` and Ctrl-C take
//! effect at once; a dependent waits (and `ps` says for what) and starts by itself once the
//! dependency is ready, even after it had failed waiting; foreground output streams from the
//! first line and only of this run. Real processes, the fake mirrord.

mod common;

use std::time::{Duration, Instant};

use common::{Live, Project, Running, group_empty, mirrord_up, service, wait_until, yaml};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);
/// What "at once" means here (the bound).
const AT_ONCE: Duration = Duration::from_millis(200);

/// db never passes its readiness check (its default timeout: 60 s); api waits for it.
fn stuck_db(web_foo: &str) -> String {
    yaml(&[
        service(
            "db",
            &["sh", "-c", "echo db-first-line; exec sleep 1000"],
            &["ready: {log: will-never-appear}"],
        ),
        service(
            "api",
            common::SLEEP,
            &["depends_on: {db: {condition: ready}}"],
        ),
        service(
            "web",
            common::SLEEP,
            &[&format!("env: {{override: {{FOO: \"{web_foo}\"}}}}")],
        ),
    ])
}

fn status(p: &Project, name: &str) -> String {
    p.ps_map()
        .get(name)
        .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn pid(p: &Project, name: &str) -> Option<i32> {
    p.ps_map()
        .get(name)
        .and_then(|r| r["pid"].as_i64())
        .map(|p| p as i32)
}

/// Runs `args` and returns how long it took (it must succeed), less what any command of ours
/// takes to start and end on this machine now (a `ps` just before): the time the supervisor
/// took to serve it.
fn timed(p: &Project, args: &[&str]) -> Duration {
    let started = Instant::now();
    p.ok(&["ps"]);
    let baseline = started.elapsed();
    let started = Instant::now();
    p.ok(args);
    started.elapsed().saturating_sub(baseline)
}

fn wait_waiting(p: &Project) {
    wait_until("api waits for db", WAIT, || {
        status(p, "api") == "waiting for db (ready)"
    });
}

#[test]
fn while_a_dependency_is_not_ready_edits_stop_up_and_ctrl_c_take_effect_at_once() {
    let p = Project::new("responsive");
    p.write_yaml(&stuck_db("one"));
    let mut up = Live::start(&p, &["up"]);
    wait_waiting(&p);
    // Item 1: db's output is shown from its first line while api still waits.
    up.wait_for("db-first-line");
    let web = pid(&p, "web").expect("web runs");

    // An edit of another service is applied.
    let saved = Instant::now();
    p.write_yaml(&stuck_db("two"));
    // It takes effect when the old process is stopped (what follows is web's own start).
    wait_until("the old web is stopped", WAIT, || group_empty(web));
    let edit = saved.elapsed();
    // The debounce (50 ms) is part of an edit's path.
    assert!(
        edit < AT_ONCE + Duration::from_millis(50),
        "the edit took {edit:?}"
    );
    wait_until("web is restarted", WAIT, || {
        pid(&p, "web").is_some_and(|new| new != web)
    });

    // `stop` and `up -d` of another service are served at once.
    let stop = timed(&p, &["stop", "web"]);
    assert!(stop < AT_ONCE, "stop took {stop:?}");
    assert_eq!(status(&p, "web"), "stopped");
    let start = timed(&p, &["up", "--detach", "web"]);
    assert!(start < AT_ONCE, "up -d web took {start:?}");
    assert_eq!(status(&p, "web"), "running");
    assert_eq!(
        status(&p, "api"),
        "waiting for db (ready)",
        "{:?}",
        p.ps_map()
    );

    // Ctrl-C: everything stops at once.
    let pids: Vec<i32> = ["db", "web"].iter().filter_map(|s| pid(&p, s)).collect();
    assert_eq!(pids.len(), 2);
    let interrupted = Instant::now();
    up.signal(Signal::SIGINT);
    wait_until("every group is empty", WAIT, || {
        pids.iter().all(|g| group_empty(*g))
    });
    let ctrl_c = interrupted.elapsed();
    assert!(ctrl_c < AT_ONCE, "Ctrl-C took {ctrl_c:?}");
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
}

#[test]
fn down_and_ci_start_are_served_while_an_up_waits_for_readiness() {
    let p = Project::new("downwait");
    p.write_yaml(&stuck_db("one"));
    p.ok(&["up", "--detach", "db", "web"]);
    // This `up -d` waits (as it always did) for api, which waits for db.
    let waiting = Running::start(p.command(&["up", "--detach", "api"]), "up -d api".into());
    wait_waiting(&p);

    // `ci start` takes the state lock: nobody holds it across the wait.
    let mut ci = mirrord_up();
    ci.current_dir(&p.dir)
        .arg("--state-dir")
        .arg(&p.state_root)
        .arg("--mirrord-bin")
        .arg(common::fake_mirrord())
        .args(["ci", "start", "--name", "job", "--", "sleep", "1000"])
        .env("FAKE_MIRRORD_LOG", &p.fake_log)
        .env("TMPDIR", &p.dir);
    let started = Instant::now();
    let out = Running::start(ci, "ci start".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "ci start took {took:?}");

    let pids: Vec<i32> = ["db", "web"].iter().filter_map(|s| pid(&p, s)).collect();
    assert_eq!(pids.len(), 2);
    // `down` takes effect when the services are stopped (it then also waits for the
    // supervisor to end).
    let baseline = {
        let started = Instant::now();
        p.ok(&["ps"]);
        started.elapsed()
    };
    let started = Instant::now();
    let down = Running::start(p.command(&["down"]), "down".into());
    wait_until("db and web are stopped", WAIT, || {
        pids.iter().all(|g| group_empty(*g))
    });
    let took = started.elapsed().saturating_sub(baseline);
    assert!(took < AT_ONCE, "down took {took:?}");
    let out = down.wait();
    assert_eq!(out.code, Some(0), "{out}");
    let out = waiting.wait();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("shutting down"), "{out}");
}

#[test]
fn a_dependent_that_failed_waiting_starts_by_itself_once_the_dependency_is_fixed() {
    let p = Project::new("healing");
    let file = |db: &[&str]| {
        yaml(&[
            service("db", db, &["ready: {log: db-is-ready, timeout: 0.3}"]),
            service(
                "api",
                common::SLEEP,
                &["depends_on: {db: {condition: ready}}"],
            ),
        ])
    };
    p.write_yaml(&file(common::SLEEP));
    let mut up = Live::start(&p, &["up"]);
    up.wait_for("api  failed: dependency db not ready after 300ms");
    assert!(
        status(&p, "api").starts_with("waiting for db (ready)"),
        "{:?}",
        p.ps_map()
    );
    // The fix: db now says it is ready. Nobody asks api to start again.
    p.write_yaml(&file(&["sh", "-c", "echo db-is-ready; exec sleep 1000"]));
    wait_until("api starts", WAIT, || status(&p, "api") == "running");
    assert_eq!(status(&p, "db"), "ready");
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
}

#[test]
fn raising_max_restarts_of_a_failed_service_takes_effect() {
    let p = Project::new("maxraise");
    let file = |max: u32| {
        yaml(&[service(
            "flaky",
            &["sh", "-c", "echo attempt; exit 3"],
            &["restart: on-failure", &format!("max_restarts: {max}")],
        )])
    };
    p.write_yaml(&file(0));
    p.run(&["up", "--detach"]);
    wait_until("flaky gives up", WAIT, || status(&p, "flaky") == "failed");
    let before = p.fake_log().len();
    p.write_yaml(&file(1));
    // One more start, then one restart, then it gives up again.
    wait_until("flaky runs twice more", WAIT, || {
        p.fake_log().len() == before + 2 && status(&p, "flaky") == "failed"
    });
    p.ok(&["down"]);
}

#[test]
fn foreground_output_is_only_of_this_run() {
    let p = Project::new("thisrun");
    let file = |word: &str, dep: &[&str]| {
        yaml(&[
            service(
                "db",
                &["sh", "-c", &format!("echo db-{word}; exec sleep 1000")],
                &["ready: {log: will-never-appear}"],
            ),
            service(
                "api",
                &["sh", "-c", &format!("echo api-{word}; exec sleep 1000")],
                dep,
            ),
        ])
    };
    p.write_yaml(&file("old", &[]));
    let mut up = Live::start(&p, &["up"]);
    up.wait_for("api-old");
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());

    // Now api waits for db, which is never ready: Ctrl-C during that wait.
    p.write_yaml(&file("new", &["depends_on: {db: {condition: ready}}"]));
    let mut up = Live::start(&p, &["up"]);
    up.wait_for("db-new");
    wait_until("api waits", WAIT, || {
        status(&p, "api") == "waiting for db (ready)"
    });
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait_exit(WAIT), Some(130), "{}", up.text());
    let out = up.text();
    assert!(!out.contains("-old"), "lines of an earlier run:\n{out}");
}

#[test]
fn a_foreground_up_ends_when_what_a_service_waits_for_has_ended() {
    let p = Project::new("waitgone");
    p.write_yaml(&yaml(&[
        service("db", &["sh", "-c", "exit 3"], &["ready: {log: never}"]),
        service(
            "api",
            common::SLEEP,
            &["depends_on: {db: {condition: ready}}"],
        ),
    ]));
    let mut up = Live::start(&p, &["up"]);
    assert_eq!(up.wait_exit(WAIT), Some(1), "{}", up.text());
    let text = up.text();
    assert!(
        text.contains("api  failed: dependency db exited before it was ready"),
        "{text}"
    );
    assert!(
        text.contains("every service has ended; failed: api, db"),
        "{text}"
    );
}

/// `up -d --wait` is a wait of the loop, not of a pass: while the supervisor waits for db's
/// readiness on behalf of a client, `stop`, `up -d` of another service and `down` are served
/// at once, and the waiting client still gets its answer.
#[test]
fn while_an_up_wait_waits_stop_and_up_of_another_service_take_effect_at_once() {
    let p = Project::new("upwaitresp");
    p.write_yaml(&stuck_db("one"));
    p.ok(&["up", "--detach", "web"]);
    let waiting = Running::start(
        p.command(&["up", "--detach", "--wait", "--wait-timeout", "8", "db"]),
        "up -d --wait db".into(),
    );
    // db has started (its first line is in its log): the wait has begun, or is about to.
    let db_log = p.state_dir.join("logs").join("db.log");
    wait_until("db writes its first line", WAIT, || {
        std::fs::read_to_string(&db_log).is_ok_and(|l| l.contains("db-first-line"))
    });
    let begun = Instant::now();
    let stop = timed(&p, &["stop", "web"]);
    assert!(
        stop < AT_ONCE,
        "stop took {stop:?} while an up --wait waited"
    );
    assert_eq!(status(&p, "web"), "stopped");
    let start = timed(&p, &["up", "--detach", "web"]);
    assert!(
        start < AT_ONCE,
        "up -d web took {start:?} while an up --wait waited"
    );
    assert_eq!(status(&p, "web"), "running");
    // `down` too: everything stops at once, and the waiting client hears why it ends.
    let down = timed(&p, &["down", "-t", "1"]);
    assert!(
        down < AT_ONCE,
        "down took {down:?} while an up --wait waited"
    );
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "served only after the wait ended"
    );
    let out = waiting.wait();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("shutting down"), "{out}");
}

/// `slow` ignores SIGTERM (its grace period: 10 s); `b` and `c` stop at once.
fn slow_stop() -> String {
    yaml(&[
        service(
            "slow",
            &[
                "sh",
                "-c",
                "trap '' TERM; echo armed; while :; do sleep 1; done",
            ],
            &["stop_timeout: 10"],
        ),
        service("b", common::SLEEP, &[]),
        service("c", common::SLEEP, &[]),
    ])
}

#[test]
fn while_a_service_is_in_a_slow_stop_up_stop_and_ps_are_served_at_once() {
    let p = Project::new("slowstop");
    p.write_yaml(&slow_stop());
    p.ok(&["up", "--detach", "slow", "c"]);
    let old = pid(&p, "slow").expect("slow runs");
    let c = pid(&p, "c").expect("c runs");
    wait_until("slow has set its trap", WAIT, || {
        p.ok(&["logs", "slow"]).stdout.contains("armed")
    });
    // A restart of `slow`: its stop takes the whole grace period.
    let restart = Running::start(p.command(&["restart", "slow"]), "restart slow".into());
    wait_until("slow is stopping", WAIT, || {
        status(&p, "slow") == "stopping"
    });

    let ps = timed(&p, &["ps"]);
    assert!(ps < AT_ONCE, "ps took {ps:?}");
    let up = timed(&p, &["up", "--detach", "b"]);
    assert!(up < AT_ONCE, "up -d b took {up:?}");
    assert_eq!(status(&p, "b"), "running");
    let stop = timed(&p, &["stop", "c"]);
    assert!(stop < AT_ONCE, "stop c took {stop:?}");
    assert_eq!(status(&p, "c"), "stopped");
    assert!(group_empty(c));
    // `slow` is still in its grace period, and nothing started it again meanwhile.
    assert_eq!(status(&p, "slow"), "stopping", "{:?}", p.ps_map());
    assert!(!group_empty(old));

    // Its grace period ends: it is killed, and the restart's start follows.
    let out = restart.wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("killed after the grace period")
            || out.stdout.contains("killed after the grace period"),
        "{out}"
    );
    assert!(group_empty(old));
    let new = pid(&p, "slow").unwrap_or_else(|| {
        panic!(
            "slow runs again: {out} {:?}",
            p.ps_map()
                .get("slow")
                .map(|r| (r["status"].clone(), r["last_reason"].clone()))
        )
    });
    assert_ne!(new, old);
    assert_eq!(status(&p, "slow"), "running", "{:?}", p.ps_map());
}

/// The supervisor's grace period is a timer of its loop (`Timer::Grace`): the SIGKILL comes
/// when the grace period ends, not at the stop thread's own backstop (2 s later).
#[test]
fn a_supervised_stop_is_killed_when_its_grace_period_ends() {
    let p = Project::new("gracetimer");
    p.write_yaml(&yaml(&[service(
        "slow",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo armed; while :; do sleep 1; done",
        ],
        &["stop_timeout: 1"],
    )]));
    p.ok(&["up", "--detach", "slow"]);
    let old = pid(&p, "slow").expect("slow runs");
    wait_until("slow has set its trap", WAIT, || {
        p.ok(&["logs", "slow"]).stdout.contains("armed")
    });
    let begun = Instant::now();
    let out = p.ok(&["stop", "slow"]);
    let took = begun.elapsed();
    assert!(group_empty(old), "{out}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2800),
        "stop took {took:?}: not killed at the end of its 1 s grace period ({out})"
    );
    assert_eq!(status(&p, "slow"), "stopped");
}

#[test]
fn while_a_session_waits_for_its_ready_stop_and_up_of_others_are_served_at_once() {
    let p = Project::new("slowready");
    p.write_yaml(&yaml(&[
        service("slow", common::SLEEP, &[]),
        service("b", common::SLEEP, &[]),
        service("c", common::SLEEP, &[]),
    ]));
    // The supervisor (and so every session) gets the knob: only `slow` says `Ready!` late.
    let first = p
        .command(&["up", "--detach", "c"])
        .env("FAKE_MIRRORD_READY_DELAY_MS", "5000")
        .env("FAKE_MIRRORD_READY_DELAY_ONLY", "slow")
        .output()
        .expect("up -d c");
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let c = pid(&p, "c").expect("c runs");
    // `up -d slow` waits for slow's `Ready!` (as it always did).
    let slow = Running::start(p.command(&["up", "--detach", "slow"]), "up -d slow".into());
    wait_until("slow is starting", WAIT, || {
        status(&p, "slow") == "starting"
    });

    let ps = timed(&p, &["ps"]);
    assert!(ps < AT_ONCE, "ps took {ps:?}");
    let stop = timed(&p, &["stop", "c"]);
    assert!(stop < AT_ONCE, "stop c took {stop:?}");
    assert_eq!(status(&p, "c"), "stopped");
    assert!(group_empty(c));
    let up = timed(&p, &["up", "--detach", "b"]);
    assert!(up < AT_ONCE, "up -d b took {up:?}");
    assert_eq!(status(&p, "b"), "running");
    // `slow` still waits for its `Ready!`.
    assert_eq!(status(&p, "slow"), "starting", "{:?}", p.ps_map());

    let out = slow.wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("slow  started (pid"), "{out}");
    assert_eq!(status(&p, "slow"), "running", "{:?}", p.ps_map());
}
