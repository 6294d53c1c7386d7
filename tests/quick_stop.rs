//! A supervisor's pass that restarts a service whose process ends at once on its stop signal
//! stops and replaces it itself (`engine::QUICK_STOP`): no stop thread. A service that takes
//! longer to end is left to the loop's stop thread, and its process still gets the stop
//! signal once — the pass sent it; the thread waits for the group without sending it again.

mod common;

use std::time::Duration;

use common::{Project, SLEEP, service, wait_until, yaml};

const WAIT: Duration = Duration::from_secs(20);

/// How many stops the supervisor handed to its stop thread so far (its `-v` log).
fn stop_threads(p: &Project) -> usize {
    p.supervisor_log().matches("stop: thread started").count()
}

#[test]
fn a_quick_exit_is_replaced_in_its_pass_and_a_slow_one_gets_its_signal_once() {
    let mut p = Project::new("quick");
    p.globals = vec!["-v".into()];
    let terms = p.dir.join("slow.terms");
    // Counts each SIGTERM; after the first it takes 300 ms to end. A second SIGTERM in that
    // time would kill its `sleep` and be counted too.
    let slow_script = format!(
        "trap 'echo TERM >> {}; n=1' TERM; n=0; echo armed; \
         while [ $n = 0 ]; do sleep 0.05; done; sleep 0.3",
        terms.display()
    );
    let file = |quick: &str, slow: &str| {
        yaml(&[
            service(
                "quick",
                SLEEP,
                &[&format!("env: {{override: {{V: \"{quick}\"}}}}")],
            ),
            service(
                "slow",
                &["sh", "-c", &slow_script],
                &[&format!("env: {{override: {{V: \"{slow}\"}}}}")],
            ),
        ])
    };
    p.write_yaml(&file("1", "1"));
    p.ok(&["up", "-d", "--no-watch"]);
    let slow_log = p.state_dir.join("logs").join("slow.log");
    wait_until("slow has set its trap", WAIT, || {
        std::fs::read_to_string(&slow_log).is_ok_and(|t| t.contains("armed"))
    });
    let first = p.pids();

    // `quick` ends at once: stopped and started by the pass that decided it.
    p.write_yaml(&file("2", "1"));
    let out = p.ok(&["up", "-d", "--no-watch"]);
    let second = p.pids();
    assert_ne!(second["quick"], first["quick"], "not restarted: {out}");
    assert_eq!(second["slow"], first["slow"], "{out}");
    assert_eq!(stop_threads(&p), 0, "a quick stop went to the stop thread");
    // What it found (the group empty, its leader collected, nothing outside it) is the stop's
    // outcome: the full stop is not run after it.
    assert_eq!(
        p.supervisor_log().matches("stop: signalled").count(),
        0,
        "the full stop ran after the quick one"
    );
    // Nobody else could see that stop (it began and ended under the state lock): no stop lock
    // was taken for it, so none was created.
    let stop_lock = |name: &str| p.state_dir.join("services").join(name).join("stop.lock");
    assert!(
        !stop_lock("quick").exists(),
        "a quick stop took a stop lock"
    );

    // `slow` does not: the loop's stop thread waits for it, and sends no second SIGTERM.
    p.write_yaml(&file("2", "2"));
    let out = p.ok(&["up", "-d", "--no-watch"]);
    wait_until("slow runs again", WAIT, || {
        p.pids()
            .get("slow")
            .is_some_and(|pid| *pid != first["slow"])
    });
    assert_eq!(p.pids()["quick"], second["quick"], "{out}");
    assert_eq!(stop_threads(&p), 1, "the slow stop is the stop thread's");
    // That stop outlived its pass: the supervisor owned it (its stop lock).
    assert!(stop_lock("slow").exists(), "the slow stop was nobody's");
    let counted = std::fs::read_to_string(&terms).unwrap_or_default();
    assert_eq!(
        counted.lines().count(),
        1,
        "SIGTERMs the slow service got: {counted:?}"
    );
    p.ok(&["down"]);
}
