//! One request type for the front-ends that change what runs (ARCHITECTURE.md, "Known
//! weaknesses": one apply path). A command builds a [`Request`] and hands it to [`submit`]:
//! to the project's supervisor over its control socket when one runs (its loop then knows),
//! otherwise to the same machine and passes run in this process until the request is
//! answered (`supervisor::oneshot`). Either way a pass takes the state lock around its own
//! load-apply-save only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::Mode;
use crate::engine::Reporter;
use crate::project::Project;
use crate::state::SupervisorRecord;
use crate::supervisor::control;
use crate::supervisor::pass::{ApplyOptions, PassSettings, Work};

/// What a front-end asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `up` (and `ci start --up`): converge the services to the file.
    Up {
        file: PathBuf,
        up: UpRequest,
    },
    /// `down`: stop every service and forget them (and end the supervisor).
    Down {
        timeout: Option<Duration>,
    },
    Restart {
        names: Vec<String>,
        timeout: Option<Duration>,
    },
    /// `stop` (and `ci stop NAME…`).
    Stop {
        names: Vec<String>,
        timeout: Option<Duration>,
    },
    Start {
        names: Vec<String>,
    },
    /// `ci stop [NAME…]`: stop these records (services or CI sessions; empty: all), forget
    /// them and stop what still carries their markers. Always served in this process (CI
    /// sessions are no supervisor's), never sent.
    CiStop {
        names: Vec<String>,
        timeout: Option<Duration>,
    },
    /// `ci start -- CMD…`: record an ad-hoc session and spawn it; the answer is its name.
    /// Always served in this process: the session runs with the environment of the pipeline
    /// step that asked, not the supervisor's.
    CiStart(Box<CiSession>),
    /// The exit of a CI session seen by the `ci start` that waits for it (its own child:
    /// only that process knows the exit code), with the cause it read from mirrord's output.
    CiExited {
        name: String,
        code: Option<i32>,
        reason: String,
    },
}

pub use crate::supervisor::ci_pass::CiSession;

/// The options of an `up`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpRequest {
    /// The services asked for (empty: all).
    pub services: Vec<String>,
    pub mode: Option<Mode>,
    pub force_recreate: bool,
    /// `--wait`: answer once every service is ready, within this time.
    pub wait: Option<Duration>,
    /// `--wait-timeout` as given (the wire form carries it also without `--wait`).
    pub wait_timeout: Duration,
    /// The active profiles of this command.
    pub profiles: Vec<String>,
    /// The `-f` files after the first.
    pub overlays: Vec<PathBuf>,
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

impl Request {
    /// The work the loop's machine runs for it (in the supervisor or in this process).
    pub fn work(&self) -> Work {
        match self.clone() {
            Request::Up { up, .. } => Work::Reconcile {
                explicit: Some(ApplyOptions {
                    force_recreate: up.force_recreate,
                    wait: up.wait,
                    services: up.services,
                    mode: up.mode,
                    profiles: Some(up.profiles),
                }),
            },
            // Served in this process (no supervisor runs, or it has ended): the sweep of
            // everything the project's markers still find is part of it.
            Request::Down { timeout } => Work::Shutdown {
                timeout,
                forget: true,
                only: None,
                sweep: true,
            },
            Request::CiStop { names, timeout } => Work::Shutdown {
                timeout,
                forget: true,
                only: (!names.is_empty()).then_some(names),
                sweep: true,
            },
            Request::Restart { names, timeout } => Work::Restart { names, timeout },
            Request::Stop { names, timeout } => Work::Stop { names, timeout },
            Request::Start { names } => Work::Start { names },
            Request::CiStart(session) => Work::CiStart(session),
            Request::CiExited { name, code, reason } => Work::RecordExit { name, code, reason },
        }
    }

    /// Its wire form, for the control socket; `None` for what is always served in this
    /// process (`ci start` and `ci stop`: CI sessions are no supervisor's).
    pub fn control(&self) -> Option<control::Request> {
        Some(match self.clone() {
            Request::Up { file, up } => control::Request::Apply {
                file,
                services: up.services,
                mode: up.mode,
                force_recreate: up.force_recreate,
                wait: up.wait.is_some(),
                wait_timeout_s: up.wait.unwrap_or(up.wait_timeout).as_secs_f64(),
                profiles: Some(up.profiles),
                overlays: Some(up.overlays),
            },
            Request::Down { timeout } => control::Request::Shutdown {
                timeout_s: secs(timeout),
            },
            Request::Restart { names, timeout } => control::Request::Restart {
                services: names,
                timeout_s: secs(timeout),
            },
            Request::Stop { names, timeout } => control::Request::Stop {
                services: names,
                timeout_s: secs(timeout),
            },
            Request::Start { names } => control::Request::Start { services: names },
            Request::CiStop { .. } | Request::CiStart(_) | Request::CiExited { .. } => {
                return None;
            }
        })
    }

    /// The standing settings of a one-shot run of it: what an `up` selects.
    fn settings(&self) -> PassSettings {
        match self {
            Request::Up { up, .. } => PassSettings {
                selection: up.services.clone(),
                mode: up.mode,
                profiles: Some(up.profiles.clone()),
                ..Default::default()
            },
            _ => PassSettings::default(),
        }
    }
}

/// Hands `req` to the project's supervisor when one runs (`supervisor`, from the state),
/// otherwise serves it in this process; returns the answer (`ok`, the summary or what went
/// wrong). An error is a request that could not be delivered.
pub fn submit(
    ctx: &dyn Project,
    supervisor: Option<&SupervisorRecord>,
    req: &Request,
    reporter: &mut dyn Reporter,
) -> Result<(bool, String)> {
    match (supervisor, req.control()) {
        (Some(sup), Some(wire)) => control::request(&sup.socket, &wire, reporter),
        _ => Ok(crate::supervisor::oneshot::serve(
            ctx,
            req.settings(),
            req.work(),
            reporter,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ci start` is two requests, both served by a pass in this process (never sent: the
    /// session runs with the asking step's environment): record-and-spawn, then the exit the
    /// command saw.
    #[test]
    fn ci_start_and_the_exit_it_saw_are_passes_served_here() {
        let session = CiSession {
            name: Some("e2e".into()),
            binary: "node".into(),
            spawn: crate::process::SpawnRequest {
                program: "/bin/true".into(),
                args: vec![],
                env: Default::default(),
                cwd: "/".into(),
                stdout: "/o/stdout".into(),
                stderr: "/o/stderr".into(),
                nonce: "n".into(),
                keep_mirrord_env: true,
            },
            spec: crate::spec::ServiceSpec::plain(
                String::new(),
                crate::spec::LauncherKind::Local,
                vec!["node".into()],
                "/",
            ),
            out_dir: "/o".into(),
        };
        let start = Request::CiStart(Box::new(session.clone()));
        assert_eq!(start.control(), None);
        assert!(matches!(start.work(), Work::CiStart(s) if *s == session));
        let exited = Request::CiExited {
            name: "e2e".into(),
            code: Some(3),
            reason: "exited right away (exit code 3)".into(),
        };
        assert_eq!(exited.control(), None);
        assert!(matches!(
            exited.work(),
            Work::RecordExit { name, code: Some(3), .. } if name == "e2e"
        ));
    }

    /// `down` and `ci stop` served in this process are the shutdown work with its marker
    /// sweep; sent to a supervisor, `down` is its plain shutdown (the CLI sweeps after it).
    #[test]
    fn down_and_ci_stop_are_sweeping_shutdowns() {
        let t = Some(Duration::from_secs(3));
        let sweeping = |w: Work| match w {
            Work::Shutdown {
                timeout,
                forget: true,
                only,
                sweep: true,
            } if timeout == t => Some(only),
            _ => None,
        };
        assert_eq!(sweeping(Request::Down { timeout: t }.work()), Some(None));
        assert_eq!(
            sweeping(
                Request::CiStop {
                    names: vec![],
                    timeout: t
                }
                .work()
            ),
            Some(None)
        );
        assert_eq!(
            sweeping(
                Request::CiStop {
                    names: vec!["s".into()],
                    timeout: t
                }
                .work()
            ),
            Some(Some(vec!["s".to_owned()]))
        );
        assert_eq!(
            Request::Down { timeout: t }.control(),
            Some(control::Request::Shutdown {
                timeout_s: Some(3.0)
            })
        );
        assert_eq!(
            Request::CiStop {
                names: vec![],
                timeout: t
            }
            .control(),
            None,
            "CI sessions are no supervisor's"
        );
    }
}
