//! The control channel of a running supervisor: a unix socket in the project's state
//! directory, one JSON request line per connection, answered by event lines and one final
//! `done` line. `up --detach`, `down`, `restart|stop|start` are its clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::config::Mode;
use crate::engine::Reporter;
use crate::process::Liveness;
use crate::state::{State, SupervisorRecord};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `up --detach` while a supervisor runs: apply the file now.
    Apply {
        file: PathBuf,
        services: Vec<String>,
        mode: Option<Mode>,
        force_recreate: bool,
        wait: bool,
        wait_timeout_s: f64,
    },
    Stop {
        services: Vec<String>,
        timeout_s: Option<f64>,
    },
    Start {
        services: Vec<String>,
    },
    Restart {
        services: Vec<String>,
        timeout_s: Option<f64>,
    },
    /// `down`: stop every service, forget them, and exit.
    Shutdown {
        timeout_s: Option<f64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// One reconcile action (`api`, `started (pid 12): new service`).
    Event { service: String, what: String },
    /// A wait began (see `Reporter::waiting`).
    Waiting {
        service: String,
        what: String,
        limit_ms: Option<u64>,
    },
    /// Another supervisor of the project already runs (it answers at `socket`).
    AlreadyRunning { pid: i32, socket: PathBuf },
    /// The end: a summary, or why it failed.
    Done { ok: bool, message: String },
}

/// Writes one reply line; a client that went away is not an error of the supervisor.
pub fn send(sink: &mut dyn Write, reply: &Reply) {
    if let Ok(mut line) = serde_json::to_vec(reply) {
        line.push(b'\n');
        let _ = sink.write_all(&line).and_then(|()| sink.flush());
    }
}

/// How a conversation ended.
#[derive(Debug)]
pub enum Outcome {
    Done { ok: bool, message: String },
    AlreadyRunning { pid: i32, socket: PathBuf },
}

/// Reads replies until the final one, handing each event to `reporter`.
pub fn read_replies(
    reader: impl std::io::Read,
    reporter: &mut dyn Reporter,
) -> Result<Option<Outcome>> {
    for line in BufReader::new(reader).lines() {
        let line = line?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Event { service, what }) => reporter.event(&service, &what),
            Ok(Reply::Waiting {
                service,
                what,
                limit_ms,
            }) => reporter.waiting(&service, &what, limit_ms.map(Duration::from_millis)),
            Ok(Reply::Done { ok, message }) => return Ok(Some(Outcome::Done { ok, message })),
            Ok(Reply::AlreadyRunning { pid, socket }) => {
                return Ok(Some(Outcome::AlreadyRunning { pid, socket }));
            }
            // Anything else on the channel (a panic message, say) is shown as is.
            Err(_) => eprintln!("{line}"),
        }
    }
    Ok(None)
}

/// The project's supervisor, if the state records one that is still alive.
pub fn running(state: Option<&State>) -> Option<SupervisorRecord> {
    let sup = state?.supervisor.as_ref()?;
    (sup.process.liveness() == Liveness::Alive && sup.process.pid != std::process::id() as i32)
        .then(|| sup.clone())
}

/// Sends `request` to the supervisor at `socket` and follows its replies to the end.
pub fn request(
    socket: &Path,
    request: &Request,
    reporter: &mut dyn Reporter,
) -> Result<(bool, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach the supervisor at {}", socket.display()))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    match read_replies(stream, reporter)? {
        Some(Outcome::Done { ok, message }) => Ok((ok, message)),
        Some(Outcome::AlreadyRunning { .. }) => bail!("unexpected answer from the supervisor"),
        None => bail!(
            "the supervisor closed the connection before answering (see supervisor.log in {})",
            socket
                .parent()
                .map(Path::display)
                .map_or(String::new(), |d| d.to_string())
        ),
    }
}
