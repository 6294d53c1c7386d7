//! The loop's rules on the paused clock, one test each, named as the rule. The test plays the
//! world (passes, stops, probes, saves, Ctrl-C, requests, exits) at virtual times of its
//! choosing and asserts when the loop's effects come out.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::config::RestartPolicy;
use crate::plan::{ExitFacts, PlanAt, Verdict, decide_exit};
use crate::supervisor::machine::{DEBOUNCE, GRACEFULLY, WAIT_SLACK};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A detached loop (`up -d`, client 1) whose first pass started db (pid 10) and web (pid 11)
/// in 20 ms: idle since.
async fn detached() -> Sim {
    let mut sim = Sim::new(false);
    sim.request(Some(1), up(&[]));
    sim.run_for(20 * MS).await;
    sim.pass_done(ok("2 started").running(&[("db", 10), ("web", 11)]));
    assert_eq!(sim.answers_to(1), [(20 * MS, true, "2 started".into())]);
    sim
}

fn is_watcher_pass(e: &Effect) -> bool {
    matches!(
        e,
        Effect::RunPass {
            work: Work::Reconcile { explicit: None },
            ..
        }
    )
}

// Saves.

#[tokio::test(start_paused = true)]
async fn a_save_is_applied_once_the_file_is_quiet_for_the_debounce() {
    let mut sim = detached().await;
    // An editor writes the file in three steps, 20 ms apart.
    for at in [1000, 1020, 1040] {
        sim.run_to(ms(at)).await;
        sim.save_partly();
    }
    sim.run_to(ms(1089)).await;
    assert!(
        sim.passes_since(S).is_empty(),
        "nothing is applied before the file is quiet for the debounce"
    );
    let applied = sim.run_until("a pass", is_pass).await;
    assert_eq!(
        applied,
        ms(1040) + DEBOUNCE,
        "the debounce after the last write"
    );
    assert_eq!(sim.passes_since(S), [applied], "applied once");
    assert!(is_watcher_pass(sim.last_pass()));
}

#[tokio::test(start_paused = true)]
async fn a_complete_save_is_applied_at_once_and_a_burst_of_them_once_more_when_it_ends() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.save();
    assert_eq!(sim.passes_since(S), [S], "no debounce for a complete write");
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("1 restarted").running(&[("db", 12), ("web", 11)]));
    // A script saves four more times, 5 ms apart: the rest of the burst is debounced.
    for at in [1015, 1020, 1025, 1030] {
        sim.run_to(ms(at)).await;
        sim.save();
    }
    let last = sim.run_until("the pass of the last save", is_pass).await;
    assert_eq!(last, ms(1030) + DEBOUNCE);
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("nothing to do").running(&[("db", 12), ("web", 11)]));
    // After a quiet debounce a complete save is applied at once again.
    sim.run_to(2 * S).await;
    sim.save();
    assert_eq!(sim.passes_since(S), [S, last, 2 * S]);
}

#[tokio::test(start_paused = true)]
async fn what_arrives_during_a_pass_is_folded_into_one_pass_after_it() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), stop(&["web"]));
    // The pass takes 500 ms; meanwhile a save, db's exit and a SIGHUP.
    sim.run_to(ms(1100)).await;
    sim.save();
    sim.run_to(ms(1200)).await;
    sim.exited("db", 10);
    sim.run_to(ms(1300)).await;
    sim.send(Event::Hangup);
    assert_eq!(sim.passes_since(S), [S], "one pass at a time");
    sim.run_to(ms(1500)).await;
    // The pass did not see db's exit (it left pid 10 running).
    sim.pass_done(ok("1 stopped").running(&[("db", 10)]));
    assert_eq!(sim.answers_to(2), [(ms(1500), true, "1 stopped".into())]);
    assert_eq!(sim.passes_since(S), [S, ms(1500)], "one more pass, at once");
    assert!(is_watcher_pass(sim.last_pass()));
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("1 restarted").running(&[("db", 12)]));
    sim.run_for(secs(60)).await;
    assert_eq!(sim.passes_since(S).len(), 2, "and nothing after it");
}

// The restart policy.

/// `api` with `restart: always`, as a pass sees it: the pass after its exit asks the restart
/// policy (`plan::decide_exit`, at the virtual time) and reports when the back-off ends; the
/// pass at its end starts it again (the streak goes on until a decision resets it).
struct Crashing {
    pid: i32,
    started: Duration,
    streak: u32,
    exited: bool,
    until: Option<Duration>,
}

impl Crashing {
    fn new() -> Crashing {
        Crashing {
            pid: 100,
            started: Duration::ZERO,
            streak: 0,
            exited: false,
            until: None,
        }
    }

    fn pass(&mut self, now: Duration) -> PassDone {
        if std::mem::take(&mut self.exited) {
            let facts = ExitFacts {
                failed: true,
                uptime: now - self.started,
                streak: self.streak,
                restart: RestartPolicy::Always,
                max_restarts: None,
                before_ready: false,
            };
            let at = PlanAt {
                now_ms: now.as_millis() as u64,
                ..Default::default()
            };
            match decide_exit(&facts, &at) {
                Verdict::Backoff {
                    until_ms, streak, ..
                } => {
                    self.streak = streak;
                    self.until = Some(ms(until_ms));
                }
                other => panic!("{other:?}"),
            }
        }
        match self.until {
            Some(until) if until > now => ok("nothing to do").due_in(until - now),
            Some(_) => {
                self.until = None;
                self.pid += 1;
                self.started = now;
                ok("1 restarted").running(&[("api", self.pid)])
            }
            None => ok("1 started").running(&[("api", self.pid)]),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_backs_off_1s_2s_4s_and_a_stable_minute_resets_it() {
    let mut sim = Sim::new(false);
    let mut api = Crashing::new();
    sim.request(Some(1), up(&[]));
    sim.pass_done(api.pass(sim.now()));
    let mut backoffs = Vec::new();
    // api crashes after each of these uptimes.
    for (i, uptime) in [ms(500), ms(500), ms(500), secs(59), secs(60)]
        .into_iter()
        .enumerate()
    {
        sim.run_for(uptime).await;
        sim.exited("api", api.pid);
        api.exited = true;
        let crashed = sim.now();
        assert_eq!(sim.passes_since(crashed), [crashed], "an exit wakes a pass");
        sim.pass_done(api.pass(sim.now()));
        if i == 2 {
            // A back-off holds nothing up: a request is served at once, and its pass keeps
            // the back-off's end.
            sim.run_for(S).await;
            sim.request(Some(2), stop(&["web"]));
            assert_eq!(sim.passes_since(crashed + S), [crashed + S]);
            sim.pass_done(api.pass(sim.now()));
            assert_eq!(sim.answers_to(2).len(), 1);
        }
        let restarted = sim.run_until("the restart", is_pass).await;
        backoffs.push(restarted - crashed);
        sim.pass_done(api.pass(sim.now()));
    }
    assert_eq!(
        backoffs,
        [secs(1), secs(2), secs(4), secs(8), secs(1)],
        "doubling while it crashes within a minute of its start; a minute up resets it"
    );
}

// Ctrl-C.

#[tokio::test(start_paused = true)]
async fn a_second_ctrl_c_kills_every_stop_in_flight_at_once() {
    let mut sim = Sim::new(true);
    sim.request(None, up(&[]));
    sim.run_for(20 * MS).await;
    sim.pass_done(ok("2 started").running(&[("db", 10), ("api", 11)]));
    // A restart of db is in flight: its stop (10 s of grace) is the loop's.
    sim.run_to(S).await;
    sim.request(Some(2), restart(&["db"]));
    sim.pass_done(
        ok("1 restarted")
            .running(&[("api", 11)])
            .signalled(&[("db", 10, secs(10))], true),
    );
    let id = sim.stop_id();
    sim.send(Event::StopSignalled {
        id,
        level: 0,
        grace: secs(10),
    });
    // The first Ctrl-C: graceful. The final pass stops everything (db too) and waits.
    sim.run_to(2 * S).await;
    sim.ctrl_c();
    assert_eq!(
        sim.when(|e| matches!(e, Effect::Notice(n) if n == GRACEFULLY)),
        [2 * S]
    );
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { work: Work::Shutdown { forget: false, .. }, stopping, .. }
            if stopping.is_empty()
    ));
    assert_eq!(sim.passes_since(2 * S), [2 * S]);
    let kills = |e: &Effect| matches!(e, Effect::KillNow | Effect::KillStop { .. });
    sim.run_to(5 * S).await;
    assert!(sim.when(kills).is_empty(), "graceful: nothing killed yet");
    // The second: every stop is killed now, the loop's and the final pass's.
    sim.ctrl_c();
    assert_eq!(sim.when(kills), [5 * S]);
    sim.send(Event::StopDone {
        id,
        outcomes: killed(&["db"]),
    });
    sim.pass_done(ok("2 stopped"));
    assert_eq!(sim.when(|e| matches!(e, Effect::Exit(130))), [5 * S]);
    assert_eq!(
        sim.answers_to(2),
        [(5 * S, false, "the supervisor is shutting down".into())],
        "the restart will not start db again"
    );
    // db's grace timer (due at 11 s) is gone with the loop.
    sim.run_to(secs(20)).await;
    assert_eq!(sim.when(kills), [5 * S]);
    assert!(sim.ended());
}

// The first pass.

const NOT_FOUND: &str = "api failed to start: command `x` not found";

#[tokio::test(start_paused = true)]
async fn a_first_pass_that_fails_ends_the_foreground_up_with_its_error() {
    let mut sim = Sim::new(true);
    sim.request(None, up(&[]));
    sim.run_for(300 * MS).await;
    // The pass printed its error; nothing runs, nothing waits, no back-off.
    sim.pass_done(failed(NOT_FOUND));
    assert_eq!(sim.when(|e| matches!(e, Effect::Exit(1))), [300 * MS]);
    assert_eq!(sim.passes().len(), 1, "nothing to stop: no final pass");
    assert!(sim.ended());
}

#[tokio::test(start_paused = true)]
async fn a_first_pass_that_fails_answers_up_d_with_its_error_and_ends_the_supervisor() {
    let mut sim = Sim::new(false);
    sim.request(Some(1), up(&[]));
    sim.run_for(300 * MS).await;
    sim.pass_done(failed(NOT_FOUND));
    assert_eq!(sim.answers_to(1), [(300 * MS, false, NOT_FOUND.into())]);
    assert_eq!(sim.when(|e| matches!(e, Effect::Exit(1))), [300 * MS]);
}

#[tokio::test(start_paused = true)]
async fn a_first_pass_that_fails_but_leaves_something_to_look_after_keeps_the_loop() {
    // Something runs.
    let mut sim = Sim::new(true);
    sim.request(None, up(&[]));
    sim.pass_done(failed(NOT_FOUND).running(&[("db", 10)]));
    // A service waits for a dependency.
    let mut waits = Sim::new(true);
    waits.request(None, up(&[]));
    waits.pass_done(failed(NOT_FOUND).waiting(&["web"]));
    // A back-off: its restart comes at its end.
    let mut backs_off = Sim::new(true);
    backs_off.request(None, up(&[]));
    backs_off.pass_done(failed("api exited right after start (exit code 1)").due_in(S));
    let restart = backs_off.run_until("the restart", is_pass).await;
    assert_eq!(restart, S);
    backs_off.pass_done(failed("api exited right after start (exit code 1)"));
    // Only the first pass counts: a later failure leaving nothing ends nothing.
    sim.run_to(S).await;
    sim.save();
    sim.pass_done(failed(NOT_FOUND));
    for s in [&sim, &waits, &backs_off] {
        assert!(!s.ended(), "{:#?}", s.effects());
        assert!(s.when(|e| matches!(e, Effect::Exit(_))).is_empty());
    }
}

// Readiness.

#[tokio::test(start_paused = true)]
async fn up_wait_fails_at_its_timeout_naming_who_is_not_ready() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), up_wait(&["api", "web"], secs(5)));
    sim.run_for(40 * MS).await;
    sim.pass_done(ok("2 started").running(&[("db", 10), ("api", 20), ("web", 21)]));
    // The pass did not wait: the loop probes api and web.
    let deadline = sim.instant(S + secs(5));
    assert_eq!(
        sim.when(
            |e| matches!(e, Effect::AwaitReady { client: 2, deadline: d, .. } if *d == deadline)
        ),
        [ms(1040)]
    );
    sim.send(Event::Awaiting {
        client: 2,
        probing: vec![("api".into(), 20), ("web".into(), 21)],
        ready: Vec::new(),
        ended: Vec::new(),
    });
    // web is ready at 2 s: the client hears it, a pass records it.
    sim.run_to(2 * S).await;
    sim.send(Event::WaitProbed {
        service: "web".into(),
        pid: 21,
        outcome: ProbeOutcome::Ready,
    });
    assert_eq!(
        sim.when(|e| matches!(e, Effect::Tell { client: 2, service, what } if service == "web" && what == "ready")),
        [2 * S]
    );
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("nothing to do").running(&[("db", 10), ("api", 20), ("web", 21)]));
    assert!(sim.answers_to(2).is_empty(), "api is not ready yet");
    // api never is: the `--wait-timeout`, counted from when its pass began, ends the wait.
    let answered = sim.run_until("the answer", is_answer).await;
    assert_eq!(answered, S + secs(5) + WAIT_SLACK);
    assert_eq!(
        sim.answers_to(2),
        [(
            answered,
            false,
            "api failed to start: api not ready after 5s".into()
        )]
    );
    assert!(!sim.ended(), "a failed wait ends only the wait");
}

#[tokio::test(start_paused = true)]
async fn up_wait_fails_at_once_when_a_service_it_waits_for_exits() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), up_wait(&["api"], secs(60)));
    sim.pass_done(ok("1 started").running(&[("db", 10), ("web", 11), ("api", 20)]));
    sim.send(Event::Awaiting {
        client: 2,
        probing: vec![("api".into(), 20)],
        ready: Vec::new(),
        ended: Vec::new(),
    });
    // api dies at 3 s, long before the 60 s: its probe ends, the wait is answered then.
    sim.run_to(3 * S).await;
    sim.send(Event::WaitProbed {
        service: "api".into(),
        pid: 20,
        outcome: ProbeOutcome::Ended,
    });
    assert_eq!(
        sim.answers_to(2),
        [(
            3 * S,
            false,
            "api failed to start: api exited before it was ready".into()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_when_its_dependency_becomes_ready_late() {
    let mut sim = Sim::new(false);
    sim.request(Some(1), up(&[]));
    sim.run_for(20 * MS).await;
    // db started; api waits for db to be ready; the loop probes db.
    let db_probe = || vec![probe("db", 10, secs(60))];
    sim.pass_done(
        ok("2 started")
            .running(&[("db", 10)])
            .waiting(&["api"])
            .probes(db_probe()),
    );
    assert!(sim.answers_to(1).is_empty(), "api still waits");
    // Meanwhile `up -d web` is served at once (and its pass asks for db's probe again).
    sim.run_to(S).await;
    sim.request(Some(2), up(&["web"]));
    assert_eq!(sim.passes_since(S), [S]);
    sim.pass_done(
        ok("1 started")
            .running(&[("db", 10), ("web", 11)])
            .waiting(&["api"])
            .probes(db_probe()),
    );
    assert_eq!(sim.answers_to(2), [(S, true, "1 started".into())]);
    assert_eq!(
        sim.when(|e| matches!(e, Effect::Probe(_))),
        [20 * MS],
        "each process is probed once"
    );
    // db is ready after 30 s: a pass at once, handed db's readiness, starts api.
    sim.run_to(secs(30)).await;
    sim.send(probed("db", 10, ProbeOutcome::Ready));
    assert_eq!(sim.passes_since(secs(30)), [secs(30)]);
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { probed, .. } if probed.ready == [("db".to_owned(), 10)]
    ));
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("1 started").running(&[("db", 10), ("web", 11), ("api", 12)]));
    // The first `up` is answered once none of its services waits.
    assert_eq!(
        sim.answers_to(1),
        [(secs(30) + 10 * MS, true, "2 started".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependency_not_ready_in_time_fails_its_dependent_and_once_fixed_starts_it() {
    let mut sim = Sim::new(false);
    sim.request(Some(1), up(&[]));
    sim.pass_done(
        ok("2 started")
            .running(&[("db", 10)])
            .waiting(&["api"])
            .probes(vec![probe("db", 10, secs(60))]),
    );
    // db's probe gives up after its 60 s: the next pass is told why, and api fails.
    sim.run_to(secs(60)).await;
    sim.send(probed("db", 10, ProbeOutcome::TimedOut(secs(60), None)));
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { probed, .. }
            if probed.not_ready.get("db") == Some(&(10, "dependency db not ready after 1m".into()))
    ));
    sim.pass_done(
        ok("nothing to do")
            .running(&[("db", 10)])
            .waiting(&["api"])
            .failing("api", "dependency db not ready after 1m"),
    );
    assert_eq!(
        sim.answers_to(1),
        [(
            secs(60),
            false,
            "api failed to start: dependency db not ready after 1m".into()
        )]
    );
    // A fix to db's config at 90 s: db restarts (pid 13), a probe of the new process; it is
    // ready at 95 s and api starts by itself.
    sim.run_to(secs(90)).await;
    sim.save();
    sim.pass_done(
        ok("1 restarted")
            .running(&[("db", 13)])
            .waiting(&["api"])
            .probes(vec![probe("db", 13, secs(60))]),
    );
    assert_eq!(
        sim.when(|e| matches!(e, Effect::Probe(_))),
        [Duration::ZERO, secs(90)]
    );
    sim.run_to(secs(95)).await;
    sim.send(probed("db", 13, ProbeOutcome::Ready));
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { probed, .. }
            if probed.ready == [("db".to_owned(), 13)] && probed.not_ready.is_empty()
    ));
    assert_eq!(sim.passes_since(secs(95)), [secs(95)]);
}

// Stops.

#[tokio::test(start_paused = true)]
async fn a_request_arriving_mid_stop_is_served_at_once_and_the_stop_goes_on() {
    let mut sim = detached().await;
    // `stop db`: its pass signals db (10 s of grace) and leaves the stop to the loop.
    sim.run_to(S).await;
    sim.request(Some(2), stop(&["db"]));
    sim.run_for(10 * MS).await;
    sim.pass_done(
        ok("1 stopped")
            .running(&[("web", 11)])
            .signalled(&[("db", 10, secs(10))], false),
    );
    let id = sim.stop_id();
    sim.send(Event::StopSignalled {
        id,
        level: 0,
        grace: secs(10),
    });
    assert!(sim.answers_to(2).is_empty(), "answered once db has stopped");
    // db ignores SIGTERM. At 2 s, `up -d web`: a pass at once, which leaves db alone.
    sim.run_to(2 * S).await;
    sim.request(Some(3), up(&["web"]));
    assert_eq!(sim.passes_since(2 * S), [2 * S]);
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { stopping, .. } if *stopping == BTreeSet::from(["db".to_owned()])
    ));
    sim.run_for(20 * MS).await;
    sim.pass_done(ok("nothing to do").running(&[("web", 11)]));
    assert_eq!(
        sim.answers_to(3),
        [(2 * S + 20 * MS, true, "nothing to do".into())]
    );
    // The stop went on: SIGKILL at the end of db's grace period, counted from its signal.
    let kill = sim
        .run_until(
            "the SIGKILL",
            |e| matches!(e, Effect::KillStop { id: i, level: 0 } if *i == id),
        )
        .await;
    assert_eq!(kill, S + 10 * MS + secs(10));
    // db is gone: a pass records it, and its end answers the `stop`.
    sim.send(Event::StopDone {
        id,
        outcomes: killed(&["db"]),
    });
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass {
            work: Work::Finish { .. },
            ..
        }
    ));
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("1 stopped").running(&[("web", 11)]));
    assert_eq!(
        sim.answers_to(2),
        [(kill + 10 * MS, true, "1 stopped".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn each_level_of_a_stop_is_killed_at_the_end_of_its_own_grace_period() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), stop(&["db", "web"]));
    sim.pass_done(ok("2 stopped").signalled(&[("web", 11, secs(3)), ("db", 10, secs(10))], false));
    let id = sim.stop_id();
    // web (the dependent, level 1) is signalled first; db once web is gone.
    sim.send(Event::StopSignalled {
        id,
        level: 1,
        grace: secs(3),
    });
    let kill = |level: usize| move |e: &Effect| matches!(e, Effect::KillStop { level: l, .. } if *l == level);
    let web_killed = sim.run_until("web's SIGKILL", kill(1)).await;
    assert_eq!(web_killed, S + secs(3));
    sim.run_for(5 * MS).await;
    sim.send(Event::StopSignalled {
        id,
        level: 0,
        grace: secs(10),
    });
    let db_killed = sim.run_until("db's SIGKILL", kill(0)).await;
    assert_eq!(db_killed, web_killed + 5 * MS + secs(10));
    sim.send(Event::StopDone {
        id,
        outcomes: killed(&["web", "db"]),
    });
    sim.pass_done(ok("2 stopped"));
    assert_eq!(sim.answers_to(2), [(db_killed, true, "2 stopped".into())]);
    assert_eq!(sim.when(kill(1)), [web_killed], "each level is killed once");
}

#[tokio::test(start_paused = true)]
async fn down_mid_stop_begins_the_final_pass_at_once_and_is_answered_by_it() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), stop(&["db"]));
    sim.pass_done(
        ok("1 stopped")
            .running(&[("web", 11)])
            .signalled(&[("db", 10, secs(10))], false),
    );
    let id = sim.stop_id();
    sim.send(Event::StopSignalled {
        id,
        level: 0,
        grace: secs(10),
    });
    // `down` at 2 s: its pass at once, stopping everything (db too).
    sim.run_to(2 * S).await;
    sim.request(
        Some(3),
        Work::Shutdown {
            timeout: None,
            forget: true,
            only: None,
            sweep: false,
        },
    );
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { work: Work::Shutdown { forget: true, .. }, stopping, .. }
            if stopping.is_empty()
    ));
    assert_eq!(sim.passes_since(2 * S), [2 * S]);
    // Requests after it are refused at once.
    sim.run_to(ms(2500)).await;
    sim.request(Some(4), up(&[]));
    assert_eq!(
        sim.answers_to(4),
        [(ms(2500), false, "the supervisor is shutting down".into())]
    );
    // The final pass waited for everything to stop (db took its grace period).
    sim.run_to(secs(11)).await;
    sim.send(Event::StopDone {
        id,
        outcomes: killed(&["db"]),
    });
    assert_eq!(
        sim.answers_to(2),
        [(secs(11), true, "1 stopped".into())],
        "the stop is done"
    );
    sim.pass_done(ok("2 stopped"));
    assert_eq!(sim.answers_to(3), [(secs(11), true, "2 stopped".into())]);
    assert_eq!(sim.when(|e| matches!(e, Effect::Exit(0))), [secs(11)]);
}

// Sessions.

#[tokio::test(start_paused = true)]
async fn a_session_holds_its_up_until_its_ready_and_a_pass_records_it_at_once() {
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), up(&["api"]));
    sim.pass_done(
        ok("1 started")
            .running(&[("db", 10), ("web", 11), ("api", 20)])
            .waiting(&["api"])
            .starting(&[("api", 20)]),
    );
    assert_eq!(
        sim.when(|e| matches!(e, Effect::WatchSessions(o) if o[0].name == "api")),
        [S]
    );
    assert!(sim.answers_to(2).is_empty(), "api has not said Ready!");
    // mirrord says `Ready!` at 4 s: a pass at once records it; its end answers the `up`.
    sim.run_to(4 * S).await;
    sim.send(Event::SessionWatched {
        service: "api".into(),
        pid: 20,
        outcome: crate::engine::SessionOutcome::Started,
    });
    assert_eq!(sim.passes_since(4 * S), [4 * S]);
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass { probed, .. } if probed.sessions.len() == 1
    ));
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("nothing to do").running(&[("db", 10), ("web", 11), ("api", 20)]));
    assert_eq!(
        sim.answers_to(2),
        [(4 * S + 10 * MS, true, "1 started".into())]
    );
}

// The end.

#[tokio::test(start_paused = true)]
async fn sighup_stops_the_foreground_and_reapplies_the_file_in_the_background() {
    let mut fg = Sim::new(true);
    fg.request(None, up(&[]));
    fg.pass_done(ok("1 started").running(&[("db", 10)]));
    fg.run_to(S).await;
    fg.send(Event::Hangup);
    assert!(matches!(
        fg.last_pass(),
        Effect::RunPass {
            work: Work::Shutdown { .. },
            ..
        }
    ));
    fg.pass_done(ok("1 stopped"));
    assert_eq!(fg.when(|e| matches!(e, Effect::Exit(129))), [S]);

    let mut bg = detached().await;
    bg.run_to(S).await;
    bg.send(Event::Hangup);
    assert_eq!(bg.passes_since(S), [S]);
    assert!(is_watcher_pass(bg.last_pass()));
}

#[tokio::test(start_paused = true)]
async fn when_every_service_has_ended_the_foreground_exits_and_the_background_says_so_once() {
    let all_down = |failed: &[&str]| PassDone {
        all_down: Some(failed.iter().map(|n| (*n).into()).collect()),
        ..ok("nothing to do")
    };
    let mut fg = Sim::new(true);
    fg.request(None, up(&[]));
    fg.pass_done(ok("1 started").running(&[("job", 10)]));
    fg.run_to(S).await;
    fg.exited("job", 10);
    fg.pass_done(all_down(&[]));
    assert_eq!(
        fg.when(|e| matches!(e, Effect::Exit(0))),
        [S],
        "no final pass"
    );
    assert_eq!(fg.passes().len(), 2);

    let mut bg = detached().await;
    for at in [S, 2 * S] {
        bg.run_to(at).await;
        bg.send(Event::Hangup);
        bg.pass_done(all_down(&["db"]));
    }
    assert_eq!(
        bg.when(
            |e| matches!(e, Effect::Say(s) if s.starts_with("every service has ended; failed: db"))
        ),
        [S],
        "said once"
    );
    assert!(!bg.ended());
}

#[tokio::test(start_paused = true)]
async fn abort_on_exit_stops_everything_at_once_and_exits_with_the_services_code() {
    let mut sim = Sim::new(true);
    sim.request(None, up(&[]));
    sim.pass_done(ok("2 started").running(&[("db", 10), ("job", 11)]));
    sim.run_to(S).await;
    sim.exited("job", 11);
    sim.pass_done(PassDone {
        abort: Some(3),
        ..ok("nothing to do").running(&[("db", 10)])
    });
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass {
            work: Work::Shutdown { .. },
            ..
        }
    ));
    assert_eq!(sim.passes_since(S), [S, S]);
    sim.run_for(20 * MS).await;
    sim.pass_done(ok("1 stopped"));
    assert_eq!(sim.when(|e| matches!(e, Effect::Exit(3))), [S + 20 * MS]);
}

/// The same rule through the real plan and executor ([`super::world::World`]): the engine's
/// clock is the paused clock, so what it records (the start, the exit, the back-off's end)
/// and when the loop's timer fires are one time line.
#[tokio::test(start_paused = true)]
async fn the_restart_comes_when_the_back_off_the_engine_recorded_ends() {
    let world = super::world::World::always("api");
    let mut sim = Sim::new(false);
    sim.request(Some(1), up(&[]));
    sim.run_for(20 * MS).await;
    sim.pass_done(world.pass());
    assert_eq!(
        world.record("api").started_at_ms,
        Some(world.ms_at(20 * MS))
    );
    let mut backoffs = Vec::new();
    for uptime in [ms(500), ms(500), secs(60)] {
        sim.run_for(uptime).await;
        let pid = world.kill("api");
        sim.exited("api", pid);
        let crashed = sim.now();
        sim.pass_done(world.pass());
        let rec = world.record("api");
        assert_eq!(rec.status, crate::state::Status::Backoff);
        let restarted = sim.run_until("the restart", is_pass).await;
        assert_eq!(
            rec.backoff_until_ms,
            Some(world.ms_at(restarted)),
            "the loop restarts it when the recorded back-off ends"
        );
        sim.pass_done(world.pass());
        let rec = world.record("api");
        assert_eq!(rec.status, crate::state::Status::Running);
        assert_eq!(rec.started_at_ms, Some(world.ms_at(restarted)));
        backoffs.push(restarted - crashed);
    }
    assert_eq!(backoffs, [secs(1), secs(2), secs(1)]);
    assert_eq!(world.record("api").policy_restarts, 3);
}

// Another process's stop.

/// A request that needs a service another process is stopping (a `ci stop api` run beside
/// the supervisor) changes nothing and waits for that stop as a wait of the loop: requests are
/// served meanwhile; once the stop is over the request's work runs again and is answered; a
/// stop that outlasts its grace period (plus the slack) is answered as still in flight.
#[tokio::test(start_paused = true)]
async fn a_request_needing_another_process_stop_waits_for_it_and_requests_are_served_meanwhile() {
    use crate::supervisor::machine::FOREIGN_STOP_SLACK;
    use crate::supervisor::pass::OwnedStop;
    let owned = |grace| OwnedStop {
        service: "db".into(),
        holder: "pid 77 (mirrord-up ci stop db)".into(),
        grace,
    };
    let mut sim = detached().await;
    sim.run_to(S).await;
    sim.request(Some(2), restart(&["db"]));
    sim.run_for(10 * MS).await;
    sim.pass_done(PassDone {
        foreign: vec![owned(secs(10))],
        ..ok("")
    });
    let awaited: Vec<_> = sim
        .effects()
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::AwaitStops {
                id,
                services,
                limit,
            } => Some((*t, *id, services.clone(), *limit)),
            _ => None,
        })
        .collect();
    assert_eq!(awaited.len(), 1, "{:?}", sim.effects());
    let (at, id, services, limit) = awaited[0].clone();
    assert_eq!(
        (at, services, limit),
        (
            S + 10 * MS,
            vec!["db".to_owned()],
            secs(10) + FOREIGN_STOP_SLACK
        )
    );
    assert!(
        sim.answers_to(2).is_empty(),
        "answered once the stop is over"
    );
    // Meanwhile `up -d web` is served at once.
    sim.run_to(2 * S).await;
    sim.request(Some(3), up(&["web"]));
    assert_eq!(sim.passes_since(2 * S), [2 * S]);
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("nothing to do").running(&[("web", 11)]));
    assert_eq!(
        sim.answers_to(3),
        [(2 * S + 10 * MS, true, "nothing to do".into())]
    );
    // The other process's stop ends at 4 s: the restart runs again at once, then is answered.
    sim.run_to(4 * S).await;
    sim.send(Event::StopsReleased { id, held: vec![] });
    assert_eq!(sim.passes_since(4 * S), [4 * S]);
    assert!(matches!(
        sim.last_pass(),
        Effect::RunPass {
            work: Work::Restart { .. },
            ..
        }
    ));
    sim.run_for(10 * MS).await;
    sim.pass_done(ok("1 restarted").running(&[("db", 12), ("web", 11)]));
    assert_eq!(
        sim.answers_to(2),
        [(4 * S + 10 * MS, true, "1 restarted".into())]
    );

    // A stop that never ends within its limit: the request is answered as still in flight.
    sim.request(Some(4), restart(&["db"]));
    sim.run_for(10 * MS).await;
    sim.pass_done(PassDone {
        foreign: vec![owned(secs(1))],
        ..ok("")
    });
    let id = sim
        .effects()
        .iter()
        .rev()
        .find_map(|(_, e)| match e {
            Effect::AwaitStops { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a second wait");
    sim.send(Event::StopsReleased {
        id,
        held: vec!["db".into()],
    });
    let answer = sim.answers_to(4);
    assert_eq!(answer.len(), 1);
    assert!(!answer[0].1);
    assert!(
        answer[0]
            .2
            .contains("db is still being stopped by pid 77 (mirrord-up ci stop db)"),
        "{answer:?}"
    );
}

/// An idle loop wakes for nothing: a stop that ends before its grace period leaves no grace
/// timer behind (ten quick restarts used to leave ten timers, waking an idle supervisor every
/// few hundred milliseconds for a grace period after the last).
#[tokio::test(start_paused = true)]
async fn a_stop_that_ends_early_leaves_no_timer_to_wake_the_loop() {
    let mut sim = detached().await;
    for i in 0..3u32 {
        sim.run_to(S + S * i).await;
        sim.request(Some(10 + i as ClientId), restart(&["db"]));
        sim.run_for(10 * MS).await;
        sim.pass_done(
            ok("1 restarted")
                .running(&[("web", 11)])
                .signalled(&[("db", 10 + i as i32, secs(10))], true),
        );
        let id = sim.stop_id();
        sim.send(Event::StopSignalled {
            id,
            level: 0,
            grace: secs(10),
        });
        assert!(sim.armed().contains(&Timer::Grace(id, 0)));
        // db stops at once.
        sim.run_for(5 * MS).await;
        sim.send(Event::StopDone {
            id,
            outcomes: vec![StopOutcome {
                killed: false,
                ..killed(&["db"]).remove(0)
            }],
        });
        assert!(
            !sim.armed().contains(&Timer::Grace(id, 0)),
            "{:?}",
            sim.armed()
        );
        sim.run_for(10 * MS).await;
        sim.pass_done(ok("1 restarted").running(&[("db", 20 + i as i32), ("web", 11)]));
    }
    assert!(
        sim.armed().is_empty(),
        "an idle loop has no timer: {:?}",
        sim.armed()
    );
}
