//! `logs -n N` costs O(N) whatever the file size (issue 14, item 3): on a 64 MiB log its
//! memory stays small (the children's peak RSS, from `getrusage`; this file holds one test so
//! that no other test's children count) and it prints exactly the last lines.

#![allow(dead_code)]

mod common;

use std::io::Write;

use common::{Project, SLEEP, service, yaml};

#[test]
fn logs_tail_of_a_large_log_reads_only_its_end() {
    let p = Project::new("biglog");
    p.write_yaml(&yaml(&[service("api", SLEEP, &[])]));
    p.ok(&["up", "--detach"]);
    p.ok(&["down"]);
    let log = p.state_dir.join("logs").join("api.log");
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let line = format!("{}\n", "x".repeat(1023));
        let mut w = std::io::BufWriter::new(&mut f);
        for _ in 0..64 * 1024 {
            w.write_all(line.as_bytes()).unwrap();
        }
        writeln!(w, "second to last").unwrap();
        writeln!(w, "the last line").unwrap();
    }
    let out = p.ok(&["logs", "-n", "2", "--no-prefix", "api"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["second to last", "the last line"], "{out}");
    let peak_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    assert!(
        peak_kib < 32 * 1024,
        "a child of this test peaked at {peak_kib} KiB (the log is 64 MiB)"
    );
    std::fs::remove_file(&log).unwrap();
}
