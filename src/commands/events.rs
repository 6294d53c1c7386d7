//! `events [--json] [SERVICE…] [--since D]` (compose `events`, issue 13.5): the running
//! supervisor's events, live, one line (or one JSON object) each: started, ready, exited (with
//! the cause), restart scheduled, failed, stopped, reload applied/failed (with file:line),
//! session connected/lost, incoming request. They come through the control socket
//! (`Request::Events`); `--since` first replays the recent ones the supervisor keeps
//! (bounded, `crate::event_hub::RING`). It ends when the supervisor ends.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};

use super::Context;
use crate::supervisor::control::{self, Reply, Request};

pub fn run(
    ctx: &Context,
    services: &[String],
    json: bool,
    since: Option<SystemTime>,
) -> Result<ExitCode> {
    let state = ctx.read_state()?;
    let Some(sup) = control::running(state.as_ref()) else {
        bail!(
            "no supervisor runs for project `{}`: events come from a running `mirrord-up up` (foreground or -d)",
            ctx.project()
        );
    };
    if let Some(s) = &state {
        for name in services {
            if !s.services.contains_key(name) {
                eprintln!(
                    "warning: `{}` is not a service of this project (yet); following it anyway",
                    crate::config::escape(name)
                );
            }
        }
    }
    let since_ms = since.map(|t| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    });
    let stream = std::os::unix::net::UnixStream::connect(&sup.socket)
        .with_context(|| format!("cannot reach the supervisor at {}", sup.socket.display()))?;
    stream.set_write_timeout(Some(control::CLIENT_TIMEOUT))?;
    let mut line = serde_json::to_vec(&Request::Events {
        services: services.to_vec(),
        since_ms,
    })?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    stream.set_read_timeout(Some(control::CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .with_context(|| format!("the supervisor at {} did not answer", sup.socket.display()))?;
    match serde_json::from_str::<Reply>(&first) {
        Ok(Reply::Accepted) => {}
        Ok(Reply::Done { message, .. }) => bail!("the supervisor refused: {message}"),
        _ => bail!("unexpected answer from the supervisor: {}", first.trim()),
    }
    stream.set_read_timeout(None)?;
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Stream(e)) => {
                let text = if json {
                    serde_json::to_string(&e)?
                } else {
                    crate::event_hub::format_line(&e)
                };
                // A reader that went away (`| head`) ends us quietly.
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Ok(Reply::Done { .. }) => break,
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
