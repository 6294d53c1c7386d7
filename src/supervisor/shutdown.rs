//! The steps of a one-shot `down` / `ci stop` pass (`Work::Shutdown { sweep: true }`), run by
//! [`super::pass`] like every other work: what is stopped does not depend on the state file
//! alone. A corrupt state file is kept aside and reported (everything is still stopped); a
//! record that points at no service's group is refused, its spawn nonce still finds its
//! processes (adopted by the pass's recovery); every record (services and CI sessions) is
//! stopped by its checked identity; afterwards every process still carrying the project's
//! markers (an intproxy that left its group, a daemonised child, anything a lost state
//! forgot) is stopped too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use nix::sys::signal::Signal;

use super::pass::StopJob;
use crate::engine::{ApplyReport, Engine, LaunchSettings, Reporter};
use crate::process::{self, ProcessIdentity, StopOutcome, sweep};
use crate::state::{State, StateError, StateLock, StateStore};

/// The answer of a sweep that found nothing at all.
pub const NOTHING_TO_STOP: &str = "nothing to stop";

/// Loads the state; a corrupt one is kept aside (the store did), said, and replaced by an
/// empty state (`true`): the markers still find what it recorded.
pub(super) fn load_or_set_aside(store: &StateStore, lock: &StateLock) -> Result<(State, bool)> {
    match store.load(lock) {
        Ok(s) => Ok((s, false)),
        Err(StateError::Corrupt { kept, reason, .. }) => {
            eprintln!(
                "warning: the state file of project `{}` is corrupt ({reason}); it was kept aside as {}. Stopping every process of the project found by its markers",
                store.project,
                kept.display()
            );
            Ok((State::new(&store.project), true))
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks `only` against the records (not when the state was corrupt: it knows none) and
/// refuses the selected records that point at no service's group (pgid 0 or 1, our own
/// group…): never signalled; their spawn nonce is kept for the recovery to find the real
/// processes. Returns what was refused, for the answer.
pub(super) fn refuse_records(
    state: &mut State,
    only: Option<&[String]>,
    // The state was corrupt (it knows no names), or the names were checked already.
    corrupt: bool,
    project: &str,
    reporter: &mut dyn Reporter,
) -> Result<Vec<String>> {
    if let Some(only) = only
        && !corrupt
    {
        crate::project::ensure_known(
            only,
            &state.services.keys().collect::<Vec<_>>(),
            project,
            "nothing named",
        )?;
    }
    let mut refused = Vec::new();
    for (n, rec) in state
        .services
        .iter_mut()
        .filter(|(n, _)| only.is_none_or(|o| o.contains(n)))
    {
        if let Some(id) = &rec.process
            && let Some(why) = id.refusal()
        {
            reporter.event(n, &format!("not signalled: {why}"));
            refused.push(format!("{n}: not signalled: {why}"));
            rec.spawn_nonce = id.nonce.clone().or(rec.spawn_nonce.take());
            rec.process = None;
        }
    }
    Ok(refused)
}

/// How a sweeping shutdown waits for the stops of its records.
#[derive(Debug, Clone, Default)]
pub enum SweepStops {
    /// In its pass, holding the state lock: the default; `Defer` falls back to it when a
    /// refused record must be reported (one pass, as before stops had owners).
    #[default]
    InPass,
    /// The one-shot's first pass: signal, record `stopping` (owned by this process,
    /// `crate::stop_owner`) and return the stops (`PassOutcome::stops`); the one-shot waits
    /// for them outside the state lock.
    Defer,
    /// The one-shot's second pass: record these outcomes (the records go), then the rest
    /// as in one pass (what is left, the marker sweep, the answer).
    Finished {
        job: StopJob,
        outcomes: Vec<StopOutcome>,
    },
}

/// What a sweeping shutdown is asked for.
pub(super) struct Sweep<'a> {
    pub only: Option<&'a [String]>,
    pub timeout: Option<Duration>,
    /// Records refused before the recovery ([`refuse_records`]).
    pub refused: Vec<String>,
    /// The state as loaded: saved only if the pass changed it.
    pub loaded: State,
    pub phase: &'a SweepStops,
}

/// Stops the selected records (deepest level first), forgets them, then stops whatever
/// still carries their markers; drops a supervisor record that is gone or no mirrord-up.
/// Answers [`NOTHING_TO_STOP`] when there was nothing, `""` otherwise; an error names every
/// survivor and refusal. With [`SweepStops::Defer`] and stops to wait for, returns them
/// instead (the marker sweep is the second pass's, [`SweepStops::Finished`]).
pub(super) fn sweep_markers(
    store: &StateStore,
    lock: &StateLock,
    state: State,
    order: Sweep<'_>,
    reporter: &mut dyn Reporter,
) -> Result<(String, Option<StopJob>)> {
    let Sweep {
        only,
        timeout,
        refused,
        loaded,
        phase,
    } = order;
    let selected = |n: &String| only.is_none_or(|o| o.contains(n));
    // How each selected record is stopped, and the spawn nonces its processes carry.
    let mut nonces = BTreeSet::new();
    let mut how: BTreeMap<String, (Signal, Duration)> = BTreeMap::new();
    for (n, rec) in state.services.iter().filter(|(n, _)| selected(n)) {
        nonces.extend(rec.spawn_nonce.clone());
        nonces.extend(rec.process.as_ref().and_then(|p| p.nonce.clone()));
        let signal = crate::config::parse_signal(&rec.spec.stop_signal).unwrap_or(Signal::SIGTERM);
        how.insert(
            n.clone(),
            (signal, timeout.unwrap_or(rec.spec.stop_timeout())),
        );
    }
    // Defer only what can be answered later as now: no refusals to carry.
    let defer = matches!(phase, SweepStops::Defer) && refused.is_empty();
    let settings = LaunchSettings {
        mirrord_bin: None,
        stop_timeout: timeout,
        defer_stops: defer,
        ..Default::default()
    };
    if only.is_none() {
        // One stop lock for every service (`stop_owner::take_all`), not one each.
        crate::stop_owner::take_all(store);
    }
    let mut engine = Engine::new(store, lock, state, settings, reporter);
    let mut report = ApplyReport::default();
    let mut had_any = false;
    if let SweepStops::Finished { job, outcomes } = phase {
        // What the first pass stopped: its records go now; its markers are swept below.
        for p in &job.stops {
            nonces.extend(p.request.identity.nonce.clone());
            how.insert(p.name.clone(), (p.request.signal, p.request.timeout));
        }
        engine.finish_stops(&job.with_outcomes(outcomes), &mut report)?;
        had_any = !job.stops.is_empty();
    }
    let names: Vec<(String, String)> = engine
        .state
        .services
        .keys()
        .filter(|n| selected(n))
        .map(|n| (n.clone(), "stop requested".to_owned()))
        .collect();
    let all: BTreeSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
    had_any |= !names.is_empty();
    engine.stop_services(&names, &all, &mut report)?;
    if !report.deferred.is_empty() {
        let job = StopJob {
            stops: std::mem::take(&mut report.deferred),
            why: "stop requested".into(),
            ..Default::default()
        };
        return Ok((String::new(), Some(job)));
    }

    let services: Option<BTreeSet<String>> = only.map(|o| o.iter().cloned().collect());
    let found = sweep::find(&sweep::Selector {
        state_dir: Some(&store.dir),
        services: services.as_ref(),
        instances: Some(&nonces),
    });
    let swept = found.len();
    let default_how = (
        Signal::SIGTERM,
        timeout.unwrap_or(crate::spec::DEFAULT_STOP_TIMEOUT),
    );
    let targets: Vec<sweep::Target> = found
        .into_iter()
        .map(|proc| {
            let (signal, timeout) = proc
                .service
                .as_ref()
                .and_then(|s| how.get(s))
                .copied()
                .unwrap_or(default_how);
            sweep::Target {
                proc,
                signal,
                timeout,
            }
        })
        .collect();
    for (t, o) in targets.iter().zip(sweep::stop_targets(&targets)) {
        let name = t.proc.service.clone().unwrap_or_else(|| "?".into());
        let pid = t.proc.info.pid;
        if o.survived {
            report.survivors.push((name, vec![pid]));
        } else {
            let killed = if o.killed {
                ", killed after the grace period"
            } else {
                ""
            };
            engine.reporter.event(
                &name,
                &format!("stopped pid {pid} (found by its markers{killed})"),
            );
        }
    }

    if engine.state.supervisor.as_ref().is_some_and(|s| {
        s.process.liveness() != process::Liveness::Alive
            || supervisor_refusal(&s.process, &store.dir).is_some()
    }) {
        engine.state.supervisor = None;
    }
    engine.save_if_changed(&loaded)?;
    let mut problems: Vec<String> = report.error_message().into_iter().collect();
    problems.extend(refused);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let message = if !had_any && swept == 0 {
        NOTHING_TO_STOP.to_owned()
    } else {
        String::new()
    };
    Ok((message, None))
}

/// Why a recorded supervisor must not be signalled: it is no process of ours to stop unless it
/// is a mirrord-up (its marker names this state directory, or it runs this very executable)
/// and not this process, its group or its session.
pub fn supervisor_refusal(id: &ProcessIdentity, state_dir: &Path) -> Option<String> {
    let me = process::own_ids();
    if id.pid <= 1 || me.contains(id.pid) {
        return Some(format!(
            "the state records pid {} as the supervisor, which is not one",
            id.pid
        ));
    }
    let marked = process::environ_of(id.pid).is_some_and(|env| {
        env.get(process::ENV_SUPERVISOR).map(String::as_str) == Some(&*state_dir.to_string_lossy())
    });
    let same_exe = || {
        let exe = |p: &str| std::fs::read_link(p).ok();
        exe(&format!("/proc/{}/exe", id.pid)).is_some()
            && exe(&format!("/proc/{}/exe", id.pid)) == exe("/proc/self/exe")
    };
    (!marked && !same_exe()).then(|| {
        format!(
            "the state records pid {} as the supervisor, but it is no mirrord-up",
            id.pid
        )
    })
}
