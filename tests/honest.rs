//! Readiness is honest (issue 11, item 9), with real processes (`--launcher local`, and the fake
//! mirrord for the last one):
//!
//! * a `tcp` probe answered by a listener outside the service's process group is not ready,
//!   and `up -d --wait` says who answers (`port P is answered by pid N (not part of the
//!   service)`) with a rounded duration;
//! * a `tcp` probe answered by the service's own listener is ready;
//! * the `http` probe reads the response and closes cleanly: the app (fixtures/http-app, which
//!   logs `ECONNRESET` when a client resets) logs `closed cleanly`, never a reset;
//! * `up -d --wait` fails at once, naming it, when a service exits during the wait;
//! * `--wait-timeout` bounds the whole command, the wait for mirrord's `Ready!` included.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Project, service, yaml};

/// fixtures/http-app compiled with plain `rustc` (std-only) into this target's tmpdir, keyed by
/// the source's content.
fn http_app() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/http-app/main.rs");
        let text = std::fs::read(&src).expect("read http-app source");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let bin = dir.join(format!("http-app-{:016x}", h.finish()));
        if bin.is_file() {
            return bin;
        }
        let tmp = dir.join(format!("http-app.tmp-{}", std::process::id()));
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let out = Command::new(rustc)
            .args(["--edition", "2024", "--crate-name", "http_app"])
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "rustc fixtures/http-app/main.rs failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &bin).expect("install http-app");
        bin
    })
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn local(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p
}

fn log_of(p: &Project, service: &str) -> String {
    std::fs::read_to_string(p.state_dir.join("logs").join(format!("{service}.log")))
        .unwrap_or_default()
}

#[test]
fn a_port_answered_outside_the_service_is_not_ready() {
    let outsider = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = outsider.local_addr().expect("addr").port();
    let p = local("foreignport");
    let ready = format!("ready: {{tcp: {port}}}");
    p.write_yaml(&yaml(&[service("api", &["sleep", "1000"], &[&ready])]));
    let out = p.run(&["up", "-d", "--wait", "--wait-timeout", "1"]);
    assert_ne!(out.code, Some(0), "{out}");
    let want = format!(
        "api not ready after 1s: port {port} is answered by pid {} (not part of the service)",
        std::process::id()
    );
    assert!(out.stderr.contains(&want), "want `{want}` in:\n{out}");
    assert_ne!(p.ps_map()["api"]["status"], "ready");
    drop(outsider);
}

#[test]
fn a_port_answered_by_the_service_itself_is_ready() {
    let port = free_port();
    let p = local("ownport");
    let ready = format!("ready: {{tcp: {port}}}");
    let app = http_app().display().to_string();
    p.write_yaml(&yaml(&[service(
        "api",
        &[&app, &port.to_string()],
        &[&ready],
    )]));
    let out = p.run(&["up", "-d", "--wait", "--wait-timeout", "20"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(p.ps_map()["api"]["status"], "ready", "{out}");
}

#[test]
fn the_http_probe_reads_the_response_and_closes_cleanly() {
    let port = free_port();
    let p = local("httpclose");
    let ready = format!("ready: {{http: \"http://127.0.0.1:{port}/health\"}}");
    let app = http_app().display().to_string();
    p.write_yaml(&yaml(&[service(
        "api",
        &[&app, &port.to_string()],
        &[&ready],
    )]));
    let out = p.run(&["up", "-d", "--wait", "--wait-timeout", "20"]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(p.ps_map()["api"]["status"], "ready", "{out}");
    // The server logs how the probe's connection ended once the probe closed it.
    common::wait_until(
        "the app logged the probe's close",
        std::time::Duration::from_secs(10),
        || {
            let log = log_of(&p, "api");
            log.contains("closed cleanly") || log.contains("ECONNRESET")
        },
    );
    let log = log_of(&p, "api");
    assert!(
        !log.contains("ECONNRESET"),
        "the probe reset the connection:\n{log}"
    );
    assert!(log.contains("closed cleanly"), "{log}");
}

#[test]
fn up_wait_fails_at_once_naming_a_service_that_exits_during_the_wait() {
    let p = local("exitwait");
    p.write_yaml(&yaml(&[
        service("api", &["sleep", "1000"], &[]),
        service(
            "flaky",
            &["sh", "-c", "echo booting; sleep 0.3; exit 3"],
            &["ready: {log: never said}", "restart: on-failure"],
        ),
    ]));
    let started = std::time::Instant::now();
    let out = p.run(&["up", "-d", "--wait", "--wait-timeout", "30"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "up --wait waited out its timeout instead of reporting the exit: {out}"
    );
    assert!(
        out.stderr.contains("flaky exited before it was ready"),
        "{out}"
    );
}

#[test]
fn wait_timeout_bounds_the_whole_command_including_the_sessions_ready() {
    let p = Project::new("waitbound");
    p.write_yaml(&yaml(&[service("api", &["sleep", "1000"], &[])]));
    let started = std::time::Instant::now();
    let out = p
        .command(&["up", "-d", "--wait", "--wait-timeout", "1"])
        .env("FAKE_MIRRORD_READY_DELAY_MS", "6000")
        .output()
        .expect("run up -d --wait");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    // Before, the command waited for mirrord's Ready! (6 s), then for readiness.
    assert!(
        took < std::time::Duration::from_secs(5),
        "up -d --wait --wait-timeout 1 took {took:?}:\n{stderr}"
    );
    assert!(stderr.contains("api not ready after 1s"), "{stderr}");
}
