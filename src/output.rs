//! Terminal output: colour decisions and the per-service prefix of compose-style logs, and the
//! one way anything is written to stdout or stderr.
//!
//! No write can panic or abort: std's `println!` and friends panic when the write fails, and
//! a foreground `up` piped into `head -2` (EPIPE, with SIGPIPE ignored), a terminal that hung
//! up (EIO) or a full disk (ENOSPC) would take the supervisor down with its services in
//! `stopping`. So this module defines `println!`, `print!`, `eprintln!` and `eprint!` with
//! the same syntax, and the crate root declares it first with `#[macro_use]`: every module of
//! the library uses these, not std's (a test in this module fails on `std::println!` and the
//! like, which would bypass them). Each call is one `write_all` of the whole text (a log line
//! of a service never lands in the middle of it); a failed write is counted, never raised.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use std::io::IsTerminal;

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR`. `TERM=dumb` declares
/// a terminal that shows escape sequences as text (Emacs shell buffers, some CI consoles), and
/// one without `TERM` is taken as such, as clap and indicatif do.
pub fn use_color(no_color_flag: bool, stream_is_tty: bool) -> bool {
    !no_color_flag
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb")
        && stream_is_tty
}

pub fn stdout_color(no_color_flag: bool) -> bool {
    use_color(no_color_flag, std::io::stdout().is_terminal())
}

/// Service colours, in the order they are handed out: the five base hues, then their bright
/// variants. Red is left for errors and failures.
pub const PALETTE: &[u8] = &[36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/// The names that have a colour, in the order they were first asked for.
static ASSIGNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Hands out colours to `names` in this order (before anything is printed), so that a
/// foreground `up` colours the services in the file's order. Names that have one keep it.
pub fn assign(names: &[String]) {
    for n in names {
        color_of(n);
    }
}

/// The colour of a service: the next colour of the palette the first time a name appears in
/// this process, the same one after that. Ten names in a row get ten different colours; the
/// eleventh starts over. `mirrord-up` (the tool's own lines) is bold, not a service colour.
pub fn color_of(name: &str) -> u8 {
    if name == "mirrord-up" {
        return 1;
    }
    let mut assigned = ASSIGNED.lock().unwrap_or_else(|e| e.into_inner());
    let index = match assigned.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            assigned.push(name.to_owned());
            assigned.len() - 1
        }
    };
    PALETTE[index % PALETTE.len()]
}

/// `name | ` padded to `width`, coloured when asked.
pub fn prefix(name: &str, width: usize, color: bool) -> String {
    if color {
        format!("\x1b[{}m{name:<width$} |\x1b[0m ", color_of(name))
    } else {
        format!("{name:<width$} | ")
    }
}

/// [`prefix`] for the lines of a follower, made again only when the service, the width or
/// the colouring changes: a loud service's lines come in runs, and one `format!` per line was
/// a tenth of `logs -f`'s CPU.
#[derive(Default)]
pub struct Prefixes {
    last: Option<(String, usize, bool, String)>,
}

impl Prefixes {
    pub fn get(&mut self, name: &str, width: usize, color: bool) -> &str {
        let kept =
            matches!(&self.last, Some((n, w, c, _)) if n == name && *w == width && *c == color);
        if !kept {
            self.last = Some((name.to_owned(), width, color, prefix(name, width, color)));
        }
        self.last.as_ref().map_or("", |(.., p)| p.as_str())
    }
}

pub fn paint(text: &str, code: u8, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `println!` that cannot panic (see the module documentation).
macro_rules! println {
    () => {
        $crate::output::text_to(false, "\n")
    };
    ($($arg:tt)*) => {
        $crate::output::line_to(false, format_args!($($arg)*))
    };
}

/// `print!` that cannot panic.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::text_to(false, &format!($($arg)*))
    };
}

/// `eprintln!` that cannot panic.
macro_rules! eprintln {
    () => {
        $crate::output::text_to(true, "\n")
    };
    ($($arg:tt)*) => {
        $crate::output::line_to(true, format_args!($($arg)*))
    };
}

/// `eprint!` that cannot panic.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::output::text_to(true, &format!($($arg)*))
    };
}

/// Writes that failed (the reader went away, the terminal hung up, the disk is full) since
/// the process started.
static LOST: AtomicU64 = AtomicU64::new(0);

/// How many writes to stdout or stderr failed so far.
pub fn lost_writes() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// Writes `bytes` to stdout in one `write_all` and flushes; a failure is counted, not raised.
/// False if the write failed.
pub fn write_stdout(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    record(out.write_all(bytes).and_then(|()| out.flush()))
}

/// Writes `bytes` to stderr in one `write_all`; a failure is counted, not raised.
///
/// When stderr is the file stdout is (a terminal, `2>&1 | tee`), it first waits for what is
/// being written to stdout: the foreground `up` prints a batch of service lines in writes of up
/// to 64 KiB, which a pipe does not keep whole against another writer, so an event line could
/// otherwise land inside a service's line.
pub fn write_stderr(bytes: &[u8]) -> bool {
    let _stdout = stderr_is_stdout().then(|| std::io::stdout().lock());
    record(std::io::stderr().lock().write_all(bytes))
}

/// Whether fds 1 and 2 are the same file (asked once).
fn stderr_is_stdout() -> bool {
    static SAME: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SAME.get_or_init(|| {
        let id = |st: nix::sys::stat::FileStat| (st.st_dev, st.st_ino);
        match (
            nix::sys::stat::fstat(std::io::stdout()),
            nix::sys::stat::fstat(std::io::stderr()),
        ) {
            (Ok(out), Ok(err)) => id(out) == id(err),
            _ => false,
        }
    })
}

/// One line (`args` and a newline) to stderr (`err`) or stdout, in one write.
pub fn line_to(err: bool, args: std::fmt::Arguments<'_>) {
    let mut line = std::fmt::format(args);
    line.push('\n');
    text_to(err, &line);
}

/// `text` to stderr (`err`) or stdout, in one write.
pub fn text_to(err: bool, text: &str) {
    if err {
        write_stderr(text.as_bytes());
    } else {
        write_stdout(text.as_bytes());
    }
}

fn record(result: std::io::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            if LOST.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::debug!(error = %e, "output lost (later failures are only counted)");
            }
            false
        }
    }
}

/// A duration as people read it, rounded: `250ms`, `1.5s`, `3s` (not `2s 999ms 999us 657ns`),
/// `1m 5s`, `2h 1s`. Every message that shows a duration uses this.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 10_000 {
        let tenths = (ms + 50) / 100;
        return match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            t => format!("{}.{t}s", tenths / 10),
        };
    }
    let secs = (ms + 500) / 1000;
    let parts = [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept prefix is the one `prefix` makes, for that service and width only.
    #[test]
    fn a_kept_prefix_follows_the_service_and_the_width() {
        let mut p = Prefixes::default();
        assert_eq!(p.get("api", 5, false), "api   | ");
        assert_eq!(p.get("api", 5, false), prefix("api", 5, false));
        assert_eq!(p.get("db", 5, false), "db    | ");
        assert_eq!(p.get("db", 2, false), "db | ");
        assert_eq!(p.get("api", 3, true), prefix("api", 3, true));
        assert_eq!(p.get("api", 3, false), "api | ");
    }

    /// Every module of the library is below the crate root's `#[macro_use] pub mod output;`
    /// (declared first), and nothing names std's printing macros, which would panic on EPIPE.
    #[test]
    fn all_printing_goes_through_the_macros_of_this_module() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
        let first_mod = lib
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("pub mod ") || l.starts_with("mod "))
            .unwrap();
        assert_eq!(
            first_mod, "pub mod output;",
            "output must be the first module"
        );
        assert!(lib.contains("#[macro_use]\npub mod output;"), "{lib}");
        let mut files = vec![root.clone()];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.ends_with("output.rs") {
                continue; // names them in this very test
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for bad in [
                "std::println!",
                "std::print!",
                "std::eprintln!",
                "std::eprint!",
            ] {
                if text.contains(bad) {
                    offenders.push(format!("{}: {bad}", path.display()));
                }
            }
            // The binary is another crate: it must not print at all.
            if path.ends_with("main.rs")
                && [
                    "println!",
                    "print!",
                    "eprintln!",
                    "eprint!",
                    "write!",
                    "writeln!",
                ]
                .iter()
                .any(|m| text.contains(m))
            {
                offenders.push(format!("{} prints", path.display()));
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }

    #[test]
    fn durations_print_rounded() {
        use std::time::Duration;
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(400), "0ms"),
            (Duration::from_micros(250_400), "250ms"),
            (Duration::from_nanos(999_600_000), "1s"),
            (Duration::from_nanos(2_999_999_657), "3s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(9_960), "10s"),
            (Duration::from_millis(59_600), "1m"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(65), "1m 5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7201), "2h 1s"),
            (Duration::from_secs(3725), "1h 2m 5s"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn names_get_distinct_colours_in_order_of_first_appearance() {
        let names: Vec<String> = ["t-db", "t-web", "t-api", "t-worker", "t-cache"]
            .map(str::to_owned)
            .to_vec();
        let colours: Vec<u8> = names.iter().map(|n| color_of(n)).collect();
        let mut distinct = colours.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{colours:?}");
        assert_eq!(color_of("t-web"), colours[1], "a name keeps its colour");
        let distinct_palette: std::collections::BTreeSet<_> = PALETTE.iter().collect();
        assert!(distinct_palette.len() >= 8);
        assert!(
            !PALETTE.contains(&31) && !PALETTE.contains(&91),
            "red is for errors"
        );
    }
}
