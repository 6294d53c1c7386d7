//! What a command shows while it waits on services (grace periods, readiness): on a terminal
//! that takes colour, one live line per service with a spinner and the time waited against the
//! limit (`api  ⠋ stopping (3.1 s / 10 s)`), kept once the service reaches an outcome
//! (`api  ✔ stopped`); anywhere else, plain lines, one per outcome
//! (`api  started (pid 12): new service`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::engine::{LineReporter, Reporter};
use crate::output::{color_of, paint};

/// The reporter for a command's own output (stderr): `quiet` is `-q`, `color` whether stderr
/// takes colour (`Context::stderr_color`).
pub fn reporter(quiet: bool, color: bool, width: usize) -> Box<dyn Reporter> {
    // The live display is made of escape sequences, so whatever rules colour out (not a
    // terminal, `--no-color`, `NO_COLOR`, `TERM` dumb or unset) rules it out too; `-q` shows
    // errors only.
    if !quiet
        && color
        && let Some(live) = LiveReporter::new(width)
    {
        return Box::new(live);
    }
    Box::new(LineReporter { quiet, width })
}

/// Often enough for the tenths of a second of the waited time to move smoothly.
const TICK: Duration = Duration::from_millis(100);

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
const CYAN: u8 = 36;
const GREEN: u8 = 32;
const RED: u8 = 31;

/// One line of the display.
struct Line {
    service: String,
    bar: ProgressBar,
    /// A wait without its outcome yet: the spinner turns.
    waiting: bool,
}

/// indicatif's `MultiProgress` on stderr, one bar per wait or outcome.
struct LiveReporter {
    multi: MultiProgress,
    width: usize,
    /// Top to bottom, as on the screen (bars are only ever added at the bottom).
    lines: VecDeque<Line>,
}

impl LiveReporter {
    fn new(width: usize) -> Option<LiveReporter> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        // indicatif decides for itself whether it can draw on stderr: should it ever disagree
        // with `use_color`, the plain lines must be printed instead, or no outcome would show.
        if multi.is_hidden() {
            return None;
        }
        Some(LiveReporter {
            multi,
            width,
            lines: VecDeque::new(),
        })
    }

    /// A bar at the bottom. It is styled before it joins the display, so that it never
    /// draws on its own (which the `MultiProgress` could not erase).
    fn add(&self, service: &str, style: ProgressStyle, message: String) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
            .with_style(style)
            .with_prefix(paint(
                &format!("{service:<w$}", w = self.width),
                color_of(service),
                true,
            ))
            .with_message(message);
        self.multi.add(bar)
    }

    fn waiting_line(&mut self, service: &str) -> Option<&mut Line> {
        self.lines
            .iter_mut()
            .rev()
            .find(|l| l.waiting && l.service == service)
    }

    /// Hands the finished lines at the top over to the terminal: indicatif forgets a dropped
    /// bar that heads its list without erasing it. They then stay in the scrollback, are never
    /// redrawn, and once no wait is in progress nothing of the display is left to redraw over
    /// what the command prints next (its summary on stdout, an error).
    fn release_finished(&mut self) {
        while self.lines.front().is_some_and(|l| !l.waiting) {
            self.lines.pop_front();
        }
    }
}

impl Reporter for LiveReporter {
    fn event(&mut self, service: &str, what: &str) {
        let text = format!("{} {what}", mark(what));
        if let Some(line) = self.waiting_line(service) {
            line.waiting = false;
            line.bar.disable_steady_tick();
            line.bar.set_style(outcome_style());
            line.bar.finish_with_message(text);
        } else {
            let bar = self.add(service, outcome_style(), text.clone());
            bar.finish_with_message(text);
            self.lines.push_back(Line {
                service: service.to_owned(),
                bar,
                waiting: false,
            });
        }
        self.release_finished();
    }

    fn waiting(&mut self, service: &str, what: &str, limit: Option<Duration>) {
        if let Some(line) = self.waiting_line(service) {
            // A new wait of the same service (never seen today, but cheap to get right).
            line.bar.set_style(waiting_style(limit));
            line.bar.set_message(what.to_owned());
            line.bar.reset_elapsed();
            return;
        }
        let bar = self.add(service, waiting_style(limit), what.to_owned());
        bar.enable_steady_tick(TICK);
        self.lines.push_back(Line {
            service: service.to_owned(),
            bar,
            waiting: true,
        });
    }
}

impl Drop for LiveReporter {
    /// A wait that never got its outcome (the command failed, or was interrupted) is erased,
    /// as the plain lines never show it; the rest is handed over to the terminal.
    fn drop(&mut self) {
        for line in &mut self.lines {
            if line.waiting {
                line.waiting = false;
                line.bar.disable_steady_tick();
                line.bar.finish_and_clear();
            }
        }
        self.release_finished();
    }
}

fn waiting_style(limit: Option<Duration>) -> ProgressStyle {
    let mut ticks: Vec<String> = SPINNER.iter().map(|t| paint(t, CYAN, true)).collect();
    // indicatif shows the last tick string once the bar is finished.
    ticks.push(" ".to_owned());
    let ticks: Vec<&str> = ticks.iter().map(String::as_str).collect();
    ProgressStyle::with_template("{prefix}  {spinner} {msg} ({waited})")
        .expect("a valid template")
        .tick_strings(&ticks)
        .with_key(
            "waited",
            move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&waited(state.elapsed(), limit));
            },
        )
}

fn outcome_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}  {msg}").expect("a valid template")
}

/// ✖ for what went wrong, ✔ for everything else.
fn mark(what: &str) -> String {
    if ["failed", "did not stop", "exited"]
        .iter()
        .any(|p| what.starts_with(p))
    {
        paint("✖", RED, true)
    } else {
        paint("✔", GREEN, true)
    }
}

/// `3.1 s / 10 s`, or `3.1 s` for a wait without a limit.
fn waited(elapsed: Duration, limit: Option<Duration>) -> String {
    let mut out = format!("{:.1} s", elapsed.as_secs_f64());
    if let Some(limit) = limit {
        // What is left of an overall deadline is a hair under the whole seconds asked for.
        let tenths = (limit.as_secs_f64() * 10.0).round() as u64;
        if tenths.is_multiple_of(10) {
            let _ = write!(out, " / {} s", tenths / 10);
        } else {
            let _ = write!(out, " / {}.{} s", tenths / 10, tenths % 10);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waited_shows_tenths_against_the_limit() {
        let t = Duration::from_millis(3140);
        assert_eq!(waited(t, Some(Duration::from_secs(10))), "3.1 s / 10 s");
        assert_eq!(
            waited(t, Some(Duration::from_millis(2500))),
            "3.1 s / 2.5 s"
        );
        assert_eq!(
            waited(t, Some(Duration::from_micros(4_999_990))),
            "3.1 s / 5 s"
        );
        assert_eq!(waited(Duration::ZERO, None), "0.0 s");
    }

    #[test]
    fn failures_get_a_cross() {
        for what in [
            "failed: exit 1",
            "did not stop: pids [12] survive",
            "exited (code 3)",
        ] {
            assert!(mark(what).contains('✖'), "{what}");
        }
        for what in [
            "started (pid 12): new service",
            "stopped",
            "ready",
            "removed: gone from the file",
        ] {
            assert!(mark(what).contains('✔'), "{what}");
        }
    }
}
