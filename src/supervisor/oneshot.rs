//! The one-shot runner: a request served in this process when no supervisor runs, by the same
//! [`Machine`] and the same passes as the supervisor's loop, ending when the request is
//! answered. `restart|stop|start` and `ci start --up` without a supervisor are this
//! (`crate::request::submit`).
//!
//! Unlike the loop it watches no file, no signal and no exit: it carries out the machine's
//! effects until the answer — a pass (on this thread: nothing else is in flight), a readiness
//! probe (on a thread of its own, as in the loop) — and leaves a back-off, an exit or a
//! change of the file to the next command or supervisor. Each pass takes the state lock for
//! its own load-apply-save only.

use tokio::sync::mpsc::unbounded_channel;
use tokio::time::Instant;

use super::machine::{ClientId, Effect, Event, Machine};
use super::pass::{self, PassSettings, Work};
use super::{Input, pass_done, spawn_probe};
use crate::engine::Reporter;
use crate::project::Project;

/// The one client of a one-shot run: the command that asked.
const ASKER: ClientId = 1;

/// Serves `work` as the loop would, with `settings` as its standing settings; returns the
/// answer (`ok`, the summary or what went wrong).
pub fn serve(
    ctx: &dyn Project,
    mut settings: PassSettings,
    work: Work,
    reporter: &mut dyn Reporter,
) -> (bool, String) {
    let (tx, mut rx) = unbounded_channel::<Input>();
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut machine = Machine::new(false);
    let mut pending = machine.handle(
        Event::Request {
            client: Some(ASKER),
            work,
        },
        Instant::now(),
    );
    let mut probes = 0usize;
    let mut last: Option<Result<String, String>> = None;
    let answer = loop {
        let mut next = None;
        for effect in std::mem::take(&mut pending) {
            match effect {
                Effect::Answer {
                    client: ASKER,
                    ok,
                    message,
                } => {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                    return (ok, message);
                }
                Effect::RunPass { work, probed, .. } => {
                    if let Work::Reconcile { explicit: Some(e) } = &work {
                        super::widen_selection(&mut settings, e);
                    }
                    let mut s = settings.clone();
                    s.probed = probed;
                    let out = pass::run_pass(ctx, &s, &work, reporter);
                    let done = pass_done(out, false);
                    last = Some(done.result.clone());
                    next = Some(Event::PassDone(done));
                }
                Effect::Probe(order) => {
                    probes += 1;
                    spawn_probe(&tx, order, cancel.clone(), false);
                }
                // Timers (debounce, back-off), notices and the loop's end are the loop's
                // business: a one-shot run ends with its answer.
                Effect::Arm { .. }
                | Effect::Answer { .. }
                | Effect::AwaitReady { .. }
                | Effect::Tell { .. }
                | Effect::InterruptPass
                | Effect::KillNow
                | Effect::Say(_)
                | Effect::Notice(_)
                | Effect::Exit(_) => {}
            }
        }
        let event = match next {
            Some(e) => e,
            // Nothing in flight but probes: their results wake the next pass.
            None if probes > 0 => match rx.blocking_recv() {
                Some(Input::Event(e @ Event::Probed { .. })) => {
                    probes -= 1;
                    e
                }
                Some(_) => continue,
                None => break None,
            },
            // Idle and not answered (a service still waits with nothing to wake it).
            None => break last,
        };
        pending = machine.handle(event, Instant::now());
    };
    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    match answer {
        Some(Ok(m)) => (true, m),
        Some(Err(e)) => (false, e),
        None => (false, "no result".into()),
    }
}
