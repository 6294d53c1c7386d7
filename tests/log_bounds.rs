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
    const LINES: u64 = 300_000;
    const MAX: u64 = 64 * 1024;
    let p = Project::new("loudlog");
    p.write_yaml(&yaml(&[service(
        "api",
        &["sh", "-c", &format!("seq 1 {LINES}; exec sleep 1000")],
        &["logging: {options: {max-size: 64k, max-file: \"100\"}}"],
    )]));
    p.ok(&["up", "--detach"]);
    let pid = p.pids()["api"];
    let log = p.state_dir.join("logs").join("api.log");
    // Done writing: the last number is in the live file, and the rotation has caught up.
    wait_until(
        "api wrote its last line and the log was trimmed",
        WAIT,
        || {
            let text = std::fs::read(&log).unwrap_or_default();
            String::from_utf8_lossy(&text).contains(&format!("\n{LINES}\n")) && data_in(&log) <= MAX
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
    let missing = (1..=LINES)
        .filter(|n| seen.binary_search(n).is_err())
        .count();
    assert_eq!(missing, 0, "{missing} lines lost at rotation");
    assert_eq!(seen, (1..=LINES).collect::<Vec<_>>());
    // `logs -n` reads the live file's end past the released head.
    let out = p.ok(&["logs", "-n", "2", "--no-prefix", "api"]);
    let tail: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        tail,
        [format!("{}", LINES - 1), format!("{LINES}")],
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
    let text = live.text();
    let seen: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("api | "))
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(seen, (1..=LINES).collect::<Vec<_>>());
    live.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(live.wait_exit(WAIT), Some(130));
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
