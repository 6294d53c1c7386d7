//! Logs of loud services (issue 14, item 3): each service's log stays bounded on disk while
//! it runs without losing a line, and the foreground `up` shows every line of a loud service,
//! in order. Real processes (the fake mirrord); waits end on conditions.

#![allow(dead_code)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Live, Project, service, wait_until, yaml};

const WAIT: Duration = Duration::from_secs(60);

/// Every number of a `seq` found in `<log>.N` … `<log>.1` then `<log>`, oldest first.
fn numbers_across(log: &Path, max_files: u32) -> Vec<u64> {
    let mut files: Vec<PathBuf> = (1..max_files)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .collect();
    files.push(log.to_owned());
    let mut out = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            let line = line.trim_start_matches('\0');
            if let Ok(n) = line.parse::<u64>() {
                out.push(n);
            }
        }
    }
    out
}

/// Bytes of data the live file holds (past the released head).
fn data_in(log: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(log) else {
        return 0;
    };
    bytes.iter().filter(|b| **b != 0).count() as u64
}

#[test]
fn a_loud_services_log_stays_bounded_while_it_runs_and_loses_no_line() {
    bounded_while_running("loudlog", 300_000, &[]);
}

/// Without the file watched, the supervisor still watches the logs for their rotation.
#[test]
fn a_log_stays_bounded_without_the_file_watched() {
    bounded_while_running("loudlog-nowatch", 100_000, &["--no-watch"]);
}

/// A service printing `lines` numbers under `max-size: 64k`, started with `up --detach` and
/// `args`: its live log is trimmed while it runs, and every line is kept, once, in order.
fn bounded_while_running(name: &str, lines: u64, args: &[&str]) {
    const MAX: u64 = 64 * 1024;
    let p = Project::new(name);
    p.write_yaml(&yaml(&[service(
        "api",
        &["sh", "-c", &format!("seq 1 {lines}; exec sleep 1000")],
        &["logging: {options: {max-size: 64k, max-file: \"100\"}}"],
    )]));
    p.ok(&[&["up", "--detach"], args].concat());
    let pid = p.pids()["api"];
    let log = p.state_dir.join("logs").join("api.log");
    // Done writing: the last number is in the live file, and the rotation has caught up.
    wait_until(
        "api wrote its last line and the log was trimmed",
        WAIT,
        || {
            let text = std::fs::read(&log).unwrap_or_default();
            String::from_utf8_lossy(&text).contains(&format!("\n{lines}\n")) && data_in(&log) <= MAX
        },
    );
    // Still the same process: it was rotated while it ran, not restarted.
    assert_eq!(p.pids()["api"], pid);
    let blocks = std::fs::metadata(&log).unwrap().blocks() * 512;
    assert!(blocks <= MAX + 8192, "the live log uses {blocks} bytes");
    let rotated = (1..100)
        .filter(|n| Path::new(&format!("{}.{n}", log.display())).exists())
        .count();
    assert!(rotated >= 1, "nothing was rotated");
    // Not one line lost, none twice, in order (the fake's own lines are not numbers).
    let seen = numbers_across(&log, 100);
    let missing = (1..=lines)
        .filter(|n| seen.binary_search(n).is_err())
        .count();
    assert_eq!(missing, 0, "{missing} lines lost at rotation");
    assert_eq!(seen, (1..=lines).collect::<Vec<_>>());
    // `logs -n` reads the live file's end past the released head.
    let out = p.ok(&["logs", "-n", "2", "--no-prefix", "api"]);
    let tail: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        tail,
        [format!("{}", lines - 1), format!("{lines}")],
        "{out}"
    );
    p.ok(&["down"]);
}

#[test]
fn foreground_up_shows_every_line_of_a_loud_service_in_order() {
    const LINES: u64 = 50_000;
    let p = Project::new("loudfg");
    p.write_yaml(&yaml(&[service(
        "api",
        &["sh", "-c", &format!("seq 1 {LINES}; exec sleep 1000")],
        &[],
    )]));
    let mut live = Live::start(&p, &["up"]);
    live.wait_for(&format!("api | {LINES}\n"));
    // Stdout alone: events go to stderr, and the test merges the two pipes where reads end.
    let text = live.stdout();
    let seen: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("api | "))
        .filter_map(|l| l.parse().ok())
        .collect();
    if let Some(at) = (0..LINES as usize).find(|&i| seen.get(i) != Some(&(i as u64 + 1))) {
        let from = at.saturating_sub(3);
        panic!(
            "{} lines shown; the first out of place is at {at}: {:?}; output near it:\n{}",
            seen.len(),
            &seen[from..(at + 3).min(seen.len())],
            near(&text, &format!("api | {at}\n"))
        );
    }
    assert_eq!(seen.len() as u64, LINES, "lines after the last");
    live.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(live.wait_exit(WAIT), Some(130));
}

/// A few lines of `text` around the first `needle`, for a failure message.
fn near(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let start = text[..at]
        .rfind('\n')
        .map_or(0, |i| text[..i].rfind('\n').map_or(0, |j| j + 1));
    text[start..].lines().take(8).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_bad_logging_option_names_file_line_and_column() {
    let p = Project::new("badlog");
    p.write_yaml(&yaml(&[service(
        "api",
        &["sleep", "1000"],
        &["logging: {options: {max-size: 1k}}"],
    )]));
    let out = p.run(&["check"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("at least 16k"), "{out}");
    assert!(out.stderr.contains("mirrord-up.yaml:4:"), "{out}");
}

/// With stdout and stderr the same pipe (`up 2>&1 | less`), an event line (stderr) never
/// lands inside a service's line (stdout, written in batches larger than a pipe keeps whole).
#[test]
fn events_never_cut_a_service_line_when_stderr_is_stdout() {
    use std::io::Read;
    const LINES: u64 = 40_000;
    let p = Project::new("sameout");
    let loud = |name: &str| {
        service(
            name,
            &["sh", "-c", &format!("seq 1 {LINES}; exec sleep 1000")],
            &[],
        )
    };
    p.write_yaml(&yaml(&[loud("api"), loud("web"), loud("job")]));
    let (read, write) = nix::unistd::pipe().expect("pipe");
    let mut cmd = p.command(&["up"]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(write.try_clone().expect("dup"))
        .stderr(write);
    let mut child = cmd.spawn().expect("spawn mirrord-up");
    drop(cmd);
    // Read slowly enough that the pipe fills: that is when a large write is split.
    let mut pipe = std::fs::File::from(read);
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    let mut last_lines: Vec<String> = ["api", "web", "job"]
        .iter()
        .map(|n| format!("{n} | {LINES}\n"))
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    while !last_lines.is_empty() && std::time::Instant::now() < deadline {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Only the new bytes (and a line's length before them) are searched.
                let from = text.len().saturating_sub(32);
                text.extend_from_slice(&buf[..n]);
                let new = String::from_utf8_lossy(&text[from..]).into_owned();
                last_lines.retain(|l| !new.contains(l.as_str()));
            }
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    // Drain to the end so that the exit is not held by a full pipe.
    let _ = pipe.read_to_end(&mut text);
    let _ = child.wait();
    let text = String::from_utf8_lossy(&text);
    assert!(last_lines.is_empty(), "not shown: {last_lines:?}");
    for name in ["api", "web", "job"] {
        let prefix = format!("{name} | ");
        let seen: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            // The fake mirrord's own lines are not numbers; a line cut by an event starts
            // with digits and goes on with something else.
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| {
                l.parse()
                    .unwrap_or_else(|_| panic!("a cut line of {name}: {l:?}"))
            })
            .collect();
        assert_eq!(seen.len() as u64, LINES, "{name}");
        assert!(
            seen.iter().zip(1..).all(|(a, b)| *a == b),
            "{name} out of order"
        );
    }
}
