//! A supervisor's pass reuses the desired state it resolved last while no file it was made of
//! changed (`desired::last`), and never misses a change: an edit in place of the same size
//! with the modification time set back, of the YAML or of a side file, between two `up -d`.
//! `--no-watch`: only the explicit `up -d` passes look at the files.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Project, SLEEP, service, wait_until, yaml};

/// Waits until every file in `paths` was last changed long enough ago for the supervisor to
/// trust its identity (`desired::last::RACY`, 20 ms): the clock is what is waited for.
fn wait_until_older(paths: &[&Path]) {
    let old = |p: &&Path| {
        let m = std::fs::metadata(p).unwrap();
        let ctime = Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        now.checked_sub(ctime)
            .is_some_and(|age| age > Duration::from_millis(50))
    };
    wait_until(
        "the files are older than 50 ms",
        Duration::from_secs(10),
        || paths.iter().all(old),
    );
}

/// Rewrites `path` in place with `text` of the same size and sets its modification time back.
fn edit_in_place(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64, "same size");
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(text.as_bytes(), 0).unwrap();
    f.set_modified(before.modified().unwrap()).unwrap();
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.modified().unwrap()),
        (before.ino(), before.len(), before.modified().unwrap()),
        "only the change time tells"
    );
}

fn reused_count(p: &Project) -> usize {
    p.supervisor_log().matches("desired state reused").count()
}

#[test]
fn an_unchanged_file_is_not_resolved_again_and_an_edit_in_place_is_still_seen() {
    let mut p = Project::new("reuse");
    p.globals = vec!["-v".into()];
    let env = p.dir.join("a.env");
    std::fs::write(&env, "V=1\n").unwrap();
    let file = |x: &str| {
        yaml(&[
            service(
                "a",
                SLEEP,
                &[
                    "env_file: a.env",
                    &format!("env: {{override: {{X: \"{x}\"}}}}"),
                ],
            ),
            service("b", SLEEP, &[]),
        ])
    };
    p.write_yaml(&file("1"));
    wait_until_older(&[&p.yaml, &env]);
    p.ok(&["up", "-d", "--no-watch"]);
    // The first pass found the side file; the second looked at it before loading: the third
    // has nothing to load.
    p.ok(&["up", "-d", "--no-watch"]);
    let out = p.ok(&["up", "-d", "--no-watch"]);
    assert!(out.stdout.contains("nothing to do"), "{out}");
    assert!(
        reused_count(&p) >= 1,
        "an unchanged file was resolved again"
    );
    let first = p.pids();

    // The YAML, rewritten in place with the same size, its mtime set back.
    edit_in_place(&p.yaml, &file("2"));
    wait_until_older(&[&p.yaml]);
    let out = p.ok(&["up", "-d", "--no-watch"]);
    let second = p.pids();
    assert_ne!(second["a"], first["a"], "the YAML's edit was missed: {out}");
    assert_eq!(second["b"], first["b"], "{out}");

    // Its env file, the same way.
    p.ok(&["up", "-d", "--no-watch"]);
    edit_in_place(&env, "V=2\n");
    wait_until_older(&[&env]);
    let out = p.ok(&["up", "-d", "--no-watch"]);
    let third = p.pids();
    assert_ne!(
        third["a"], second["a"],
        "the env file's edit was missed: {out}"
    );
    assert_eq!(third["b"], first["b"], "{out}");
    p.ok(&["down"]);
}
