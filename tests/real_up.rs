//! `up -d`, foreground `up` and `ci start` with the REAL mirrord 3.250.0 CLI
//! (`../shared/mirrord/bin/mirrord`), which parses each session's config completely and then
//! fails at the cluster step (there is no cluster here: `KUBECONFIG` names a missing file),
//! the way a real session fails on a bad kubeconfig. A launcher must report that failure fast,
//! with mirrord's cause, naming the service, and leave no process of the project behind.
//!
//! These run when the binary exists; under `CI=true` its absence fails them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Out, Project, Running, live_processes, mirrord_up};

const CAUSE: &str = "Failed to create Kubernetes API client";
/// How fast a failure with the real mirrord must be reported.
const WITHIN: Duration = Duration::from_secs(5);

/// `mirrord-up -f <yaml> --state-dir <root> --mirrord-bin <real> ARGS` in the project's
/// directory, with a scratch HOME and TMPDIR, a missing kubeconfig and no version check.
fn command(p: &Project, real: &Path, args: &[&str]) -> Command {
    let mut cmd = mirrord_up();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIRRORD_") {
            cmd.env_remove(k);
        }
    }
    let scratch = p.dir.join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    cmd.current_dir(&p.dir)
        .arg("-f")
        .arg(&p.yaml)
        .arg("--state-dir")
        .arg(&p.state_root)
        .arg("--mirrord-bin")
        .arg(real)
        .args(args)
        .env("HOME", &scratch)
        .env("TMPDIR", &scratch)
        .env("KUBECONFIG", scratch.join("missing-kubeconfig"))
        .env("MIRRORD_CHECK_VERSION", "false");
    cmd
}

fn run(cmd: Command, what: &str) -> (Out, Duration) {
    let started = Instant::now();
    let out = Running::start(cmd, what.to_owned()).wait();
    (out, started.elapsed())
}

/// Three services with explicit targets (no inference, so the cluster is first met by mirrord
/// itself), telemetry off.
fn three_services(p: &Project) {
    p.write_yaml(
        "common:
  telemetry: false
services:
  api:
    target: {path: deployment/api}
    run: {command: [sleep, '1000']}
  web:
    target: {path: deployment/web, namespace: staging}
    run: {command: [sleep, '1000']}
  worker:
    target: {path: pod/worker}
    run: {command: [sleep, '1000']}
",
    );
}

/// Live processes (zombies excluded) whose environment carries `MIRRORD_UP_PROJECT=<project>`,
/// or that are this project's supervisor (`MIRRORD_UP_SUPERVISOR=<state dir>`).
fn project_processes(p: &Project) -> Vec<(i32, String)> {
    let state_dir = p.state_dir.to_string_lossy().into_owned();
    live_processes()
        .into_iter()
        .filter_map(|s| {
            let env = common::environ(s.pid)?;
            let ours = env.get("MIRRORD_UP_PROJECT") == Some(&p.name)
                || env.get("MIRRORD_UP_SUPERVISOR") == Some(&state_dir);
            ours.then(|| {
                let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                (s.pid, cmdline)
            })
        })
        .filter(|(pid, _)| common::alive(*pid))
        .collect()
}

#[test]
fn up_detach_with_the_real_mirrord_fails_fast_naming_every_service_and_the_cause() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    let p = Project::new("realupd");
    three_services(&p);
    let (out, took) = run(command(&p, &real, &["up", "-d"]), "up -d");
    assert_ne!(out.code, Some(0), "{out}");
    assert!(took < WITHIN, "up -d took {took:?}: {out}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {out}"));
    for s in ["api", "web", "worker"] {
        assert!(
            error.contains(&format!(
                "{s} failed to start: mirrord exited before Ready! (exit code 1): {CAUSE}"
            )),
            "{s} is not named with the cause: {out}"
        );
    }
    common::assert_no_mirrord_help(&out.stderr);
    // `ps` has the cause too.
    let mut ps = command(&p, &real, &["ps", "--format", "json"]);
    ps.env_remove("KUBECONFIG");
    let (ps, _) = run(ps, "ps");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&ps.stdout).expect("ps json");
    assert_eq!(rows.len(), 3, "{ps}");
    for r in &rows {
        assert_eq!(r["status"], "failed", "{r}");
        assert!(
            r["last_reason"].as_str().is_some_and(|t| t.contains(CAUSE)),
            "{r}"
        );
    }
    let left = project_processes(&p);
    assert!(left.is_empty(), "processes of the project left: {left:?}");
}

#[test]
fn foreground_up_with_the_real_mirrord_exits_non_zero_with_the_cause() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    let p = Project::new("realupfg");
    three_services(&p);
    let (out, took) = run(command(&p, &real, &["up"]), "up");
    assert_eq!(out.code, Some(1), "{out}");
    assert!(took < WITHIN, "up took {took:?}: {out}");
    for s in ["api", "web", "worker"] {
        assert!(
            out.stderr.contains(&format!(
                "{s} failed to start: mirrord exited before Ready!"
            )),
            "{out}"
        );
    }
    assert!(out.stderr.contains(CAUSE), "{out}");
    let left = project_processes(&p);
    assert!(left.is_empty(), "processes of the project left: {left:?}");
}

#[test]
fn ci_start_with_the_real_mirrord_fails_fast_with_the_cause_and_ci_stop_leaves_nothing() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    let p = Project::new("realci");
    // Our global options after `ci start` (here `--name` is ours, `-t` mirrord's).
    let (out, took) = run(
        command(
            &p,
            &real,
            &[
                "ci",
                "start",
                "--name",
                "api",
                "-t",
                "deployment/api",
                "--",
                "sleep",
                "1000",
            ],
        ),
        "ci start",
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(took < WITHIN, "ci start took {took:?}: {out}");
    assert!(
        out.stderr.contains(&format!(
            "session `api` failed before Ready! (exit code 1): {CAUSE}"
        )),
        "{out}"
    );
    common::assert_no_mirrord_help(&out.stderr);

    let (stop, _) = run(command(&p, &real, &["ci", "stop", "-t", "1"]), "ci stop");
    assert_eq!(stop.code, Some(0), "{stop}");
    let left = project_processes(&p);
    assert!(left.is_empty(), "processes of the project left: {left:?}");
}
