//! `up --wait` as a wait of the loop, not of a pass: what the shell does for
//! [`Effect::AwaitReady`](super::machine::Effect::AwaitReady). It reads the state (no lock: a
//! pass writes it whole) and sorts the services waited for into ready already, ended (they
//! cannot become ready), and running: those get a readiness probe each, bounded by the wait's
//! deadline, whose result comes back as `Event::WaitProbed`.

use std::time::Duration;

use tokio::time::Instant;

use super::pass::ProbeOrder;
use crate::readiness::{NotReady, NotReadyWhy};
use crate::state::{RecordKind, State, Status};

/// The services of an `up --wait`, sorted.
#[derive(Debug, Default)]
pub struct Looked {
    /// A probe each, with the service's own readiness timeout.
    pub probes: Vec<(ProbeOrder, Duration)>,
    pub ready: Vec<String>,
    pub ended: Vec<(String, String)>,
}

/// Sorts `services` (all: empty) of `state` for a wait that ends at `deadline`.
pub fn look(state: &State, services: &[String], deadline: Instant, now: Instant) -> Looked {
    let mut out = Looked::default();
    let left = deadline.saturating_duration_since(now);
    for (name, rec) in state.records(RecordKind::Service) {
        if services.is_empty() {
            if rec.status == Status::Stopped {
                continue;
            }
        } else if !services.contains(name) {
            continue;
        }
        let not = |why| NotReady::new(name, why).as_service().to_string();
        match (rec.status, &rec.process) {
            (Status::Ready, _) => out.ready.push(name.clone()),
            (Status::Running | Status::Starting, Some(identity)) => {
                let own = crate::engine::ready_timeout(&rec.spec);
                let order = ProbeOrder {
                    service: name.clone(),
                    identity: identity.clone(),
                    log: rec.log_path.clone(),
                    offset: rec.log_offset,
                    probe: crate::readiness::Probe::of(&rec.spec),
                    timeout: own.min(left),
                    owner_check: crate::readiness::owner_checked(&rec.spec),
                };
                out.probes.push((order, own));
            }
            (Status::Exited | Status::Failed | Status::Backoff, _) => {
                out.ended.push((name.clone(), not(NotReadyWhy::Exited)))
            }
            _ => out.ended.push((name.clone(), not(NotReadyWhy::NotRunning))),
        }
    }
    out
}
