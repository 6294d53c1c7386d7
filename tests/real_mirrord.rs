//! The real mirrord CLI (`../shared/mirrord/bin/mirrord`, 3.250.0) as the reference for the
//! configuration hand-over. Runs when the binary exists; fails under `CI=true` when it is missing.
//!
//! * Acceptance: for every service of every file in `fixtures/compat/valid/`, the configuration
//!   we hand over (`MIRRORD_UP_RESOLVED_CONFIG`, and the `-f` fallback with strict env) is
//!   accepted by the real CLI: it stops at the cluster step, not at the config.
//! * Oracle: for every such file real `mirrord up -f F` can run without a cluster, each child's
//!   configuration (the app's `MIRRORD_RESOLVED_CONFIG`, reached through the test hook
//!   `MIRRORD_TEST_INTPROXY_ADDR`, runtime.md §2.1) equals what our child gets, field by field,
//!   except [`DELIBERATE`] and the volatile fields of [`VOLATILE`].

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, compat_fixtures, wait_until};
use serde_json::Value;

const KEY: &str = "tester";

/// Fields that differ between any two resolutions (a timestamp and random letters).
const VOLATILE: &[&str] = &[
    "/internal_proxy/log_destination",
    "/external_proxy/log_destination",
];

/// Deliberate differences (README "Differences from real mirrord up"): the default header
/// filter is anchored and regex-escaped, so a key matches only itself.
const DELIBERATE: &[&str] = &["/feature/network/incoming/http_filter/header_filter"];

/// A clean environment for mirrord: scratch HOME/TMPDIR, a missing kubeconfig, no version
/// check, nothing of the invoking shell's `MIRRORD_*`.
fn clean(cmd: &mut Command, scratch: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", scratch.join("home"))
        .env("TMPDIR", scratch)
        .env("KUBECONFIG", scratch.join("missing-kubeconfig"))
        .env("MIRRORD_CHECK_VERSION", "false")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("home")).expect("home");
    dir
}

/// `mirrord-up config` of a fixture: service → generated mirrord.json. Inferred targets need a
/// cluster, so files that fail with the mirrord launcher are generated with the local one
/// (targets then stay unresolved: the config is still the one handed over, minus the path).
fn generated(real: &Path, fixture: &Path, scratch: &Path) -> BTreeMap<String, Value> {
    let run = |launcher: &str| {
        let mut cmd = Command::new(BIN);
        clean(&mut cmd, scratch);
        cmd.arg("-f")
            .arg(fixture)
            .args(["-k", KEY, "--launcher", launcher, "--state-dir"])
            .arg(scratch.join("state"))
            .arg("--mirrord-bin")
            .arg(real)
            .arg("config")
            .current_dir(fixture.parent().expect("dir"))
            .output()
            .expect("run mirrord-up config")
    };
    let mut out = run("mirrord");
    if !out.status.success() {
        out = run("local");
    }
    assert!(
        out.status.success(),
        "{}: {}",
        fixture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config JSON")
}

#[test]
fn every_config_we_hand_over_is_accepted_by_the_real_cli() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    mirrord_up::handover::set_key_provided(true);
    let mut checked = 0;
    for fixture in compat_fixtures("valid") {
        let dir = scratch();
        for (service, config) in generated(&real, &fixture, dir.path()) {
            let what = format!("{} / {service}", fixture.display());
            let svc_dir = dir.path().join("svc").join(&service);
            std::fs::create_dir_all(&svc_dir).expect("dir");
            let path = svc_dir.join("mirrord.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
            let handover = mirrord_up::handover::prepare(&real, &path, &config)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let mirrord_up::handover::Handover::Resolved { encoded } = handover else {
                panic!("{what}: 3.250.0 must get the hand-over, got {handover:?}");
            };
            // The hand-over, and the `-f` fallback with strict env.
            let runs: [(&str, Vec<&str>, Option<&str>); 2] = [
                (
                    "hand-over",
                    vec!["exec", "--", "true"],
                    Some(encoded.as_str()),
                ),
                (
                    "-f fallback",
                    vec!["exec", "-f", path.to_str().unwrap(), "--", "true"],
                    None,
                ),
            ];
            // Known: real `exec -f` refuses `target.path: targetless` with steal (its verify
            // treats it as a targetless agent) while the decoded hand-over is accepted, as
            // for real `up`'s children. Only the fallback is affected.
            let explicit_targetless =
                config.pointer("/target/path") == Some(&Value::from("targetless"));
            for (how, args, encoded) in runs {
                if explicit_targetless && encoded.is_none() {
                    continue;
                }
                let mut cmd = Command::new(&real);
                clean(&mut cmd, dir.path());
                cmd.args(&args).env("MIRRORD_CLI_STRICT_ENV", "true");
                if let Some(e) = encoded {
                    cmd.env("MIRRORD_UP_RESOLVED_CONFIG", e);
                }
                let out = cmd.output().expect("run real mirrord");
                let stderr = String::from_utf8_lossy(&out.stderr);
                // The cluster step: the kube client (operator lookup) or, with
                // `operator: false`, the agent creation, both on the missing kubeconfig.
                assert!(
                    stderr.contains("Failed to create Kubernetes API client")
                        || stderr
                            .contains("Failed to create mirrord-agent: Failed to load Kube config"),
                    "{what} ({how}): the real CLI did not reach the cluster step:\n{stderr}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} configs checked");
}

/// Why a fixture (or some of its services) cannot be run by real `mirrord up` here.
fn oracle_skip(fixture: &Path, doc: &Value) -> Option<String> {
    let name = fixture.file_name().unwrap().to_string_lossy();
    if name.starts_with("ext-") {
        return Some("uses mirrord-up extensions that real `mirrord up` refuses".into());
    }
    if !doc.is_object() {
        return Some("not plain YAML before Tera rendering (statements outside values)".into());
    }
    None
}

/// Keeps the services real `up` can run without a cluster (explicit target or `none`, run type
/// exec), and makes each print its `MIRRORD_RESOLVED_CONFIG` to `<out>/<service>.<tag>`.
/// Returns the names kept and the reasons for the others.
fn rewrite(doc: &Value, out: &Path, tag: &str) -> (Value, Vec<String>, Vec<String>) {
    let mut doc = doc.clone();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let services = doc["services"].as_object_mut().expect("services");
    services.retain(|name, svc| {
        let target = svc.get("target");
        // Absent, null, or a map without `path` (a namespace hint): inferred.
        if target.is_none_or(|t| t.is_null() || t.is_object() && t.get("path").is_none()) {
            dropped.push(format!("{name}: target inference needs a cluster"));
            return false;
        }
        if svc.pointer("/run/type").and_then(Value::as_str) == Some("container") {
            dropped.push(format!(
                "{name}: `mirrord container` needs a container runtime"
            ));
            return false;
        }
        true
    });
    for (name, svc) in services.iter_mut() {
        let file = out.join(dump_name(name, tag));
        // Written under another name and renamed, so a file that exists is complete; then the
        // child stays (real `up` stops every child once one exits).
        svc["run"] = serde_json::json!({"command": [
            "sh", "-c",
            format!(
                "printf %s \"$MIRRORD_RESOLVED_CONFIG\" > '{0}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 60",
                file.display()
            )
        ]});
        if svc.get("skip").and_then(Value::as_bool) != Some(true) {
            kept.push(name.clone());
        }
    }
    (doc, kept, dropped)
}

fn decode(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("config dump");
    mirrord_up::handover::decode(text.trim())
        .unwrap_or_else(|| panic!("{}: not base64 JSON", path.display()))
}

fn normalise(mut v: Value) -> Value {
    for p in VOLATILE.iter().chain(DELIBERATE) {
        if let Some(slot) = v.pointer_mut(p) {
            *slot = Value::String("<normalised>".into());
        }
    }
    // A HashSet in real mirrord: random order.
    if let Some(Value::Array(a)) = v.pointer_mut("/feature/network/incoming/ignore_ports") {
        a.sort_by_key(|x| x.as_u64());
    }
    v
}

fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x
                .keys()
                .chain(y.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff(l, r, &p, out),
                    (l, r) => out.push(format!("{p}: real {l:?} / ours {r:?}")),
                }
            }
        }
        _ if a != b => out.push(format!("{path}: real {a} / ours {b}")),
        _ => {}
    }
}

/// Waits for `child` with a deadline; kills it (by PID) if it overruns.
fn wait_child(mut child: std::process::Child, what: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn children_get_the_config_real_mirrord_up_gives_its_children() {
    let Some(real) = common::real_mirrord() else {
        return;
    };
    let mut compared = 0;
    let mut skipped = Vec::new();
    for fixture in compat_fixtures("valid") {
        let text = std::fs::read_to_string(&fixture).expect("fixture");
        let doc: Value = serde_yaml_value(&text);
        if let Some(why) = oracle_skip(&fixture, &doc) {
            skipped.push(format!("{}: {why}", fixture.display()));
            continue;
        }
        let dir = scratch();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let (real_doc, kept, dropped) = rewrite(&doc, &out_dir, "real");
        let (ours_doc, _, _) = rewrite(&doc, &out_dir, "ours");
        for d in dropped {
            skipped.push(format!("{} / {d}", fixture.display()));
        }
        if kept.is_empty() {
            continue;
        }
        let proj = dir.path().join("proj");
        std::fs::create_dir(&proj).unwrap();
        // Side files next to the YAML (env files etc.) come along.
        let real_yaml = proj.join("real.yaml");
        let ours_yaml = proj.join("mirrord-up.yaml");
        std::fs::write(&real_yaml, serde_json::to_string(&real_doc).unwrap()).unwrap();
        std::fs::write(&ours_yaml, serde_json::to_string(&ours_doc).unwrap()).unwrap();

        let mut cmd = Command::new(&real);
        clean(&mut cmd, dir.path());
        cmd.env("MIRRORD_TEST_INTPROXY_ADDR", "127.0.0.1:1")
            .current_dir(&proj)
            .args(["up", "-f"])
            .arg(&real_yaml)
            .args(["-k", KEY])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let what = fixture.display().to_string();
        let out = {
            use std::os::unix::process::CommandExt;
            let mut child = cmd.process_group(0).spawn().expect("real up");
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut status = None;
            while Instant::now() < deadline {
                if kept
                    .iter()
                    .all(|s| out_dir.join(dump_name(s, "real")).is_file())
                {
                    break;
                }
                if let Some(s) = child.try_wait().expect("try_wait") {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Real up and its children (same group; the intproxy is skipped by the test hook).
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            format!("real up exit: {status:?}")
        };
        let real_ran: Vec<String> = kept
            .iter()
            .filter(|s| out_dir.join(dump_name(s, "real")).is_file())
            .cloned()
            .collect();
        if real_ran.len() != kept.len() {
            panic!("{what}: real up ran only {real_ran:?} of {kept:?} ({out})");
        }

        let state = dir.path().join("state");
        let ours = |args: &[&str]| {
            let mut cmd = Command::new(BIN);
            clean(&mut cmd, dir.path());
            cmd.env("MIRRORD_TEST_INTPROXY_ADDR", "127.0.0.1:1")
                .current_dir(&proj)
                .arg("-f")
                .arg(&ours_yaml)
                .args(["-k", KEY, "--state-dir"])
                .arg(&state)
                .arg("--mirrord-bin")
                .arg(&real)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            wait_child(cmd.spawn().expect("mirrord-up"), "mirrord-up")
        };
        let up = ours(&["up", "-d"]);
        let written = || {
            kept.iter()
                .all(|s| out_dir.join(dump_name(s, "ours")).is_file())
        };
        let waited = std::panic::catch_unwind(|| {
            wait_until(
                &format!("{what}: our children dumped"),
                Duration::from_secs(20),
                || {
                    // The file is written by `printf` in one go; wait for a non-empty one.
                    written()
                        && kept.iter().all(|s| {
                            std::fs::metadata(out_dir.join(dump_name(s, "ours")))
                                .is_ok_and(|m| m.len() > 0)
                        })
                },
            )
        });
        ours(&["down", "-t", "1"]);
        if waited.is_err() {
            panic!(
                "{what}: our children did not dump their config:\n{}\n{}",
                String::from_utf8_lossy(&up.stdout),
                String::from_utf8_lossy(&up.stderr)
            );
        }
        for s in &kept {
            let r = normalise(decode(&out_dir.join(dump_name(s, "real"))));
            let o = normalise(decode(&out_dir.join(dump_name(s, "ours"))));
            let mut d = Vec::new();
            diff(&r, &o, "", &mut d);
            assert!(
                d.is_empty(),
                "{what} / {s}: differs from real up:\n{}",
                d.join("\n")
            );
            compared += 1;
        }
    }
    eprintln!(
        "compared {compared} services; skipped:\n{}",
        skipped.join("\n")
    );
    assert!(compared >= 10, "only {compared} services compared");
}

fn serde_yaml_value(text: &str) -> Value {
    serde_yaml::from_str::<Value>(text).unwrap_or(Value::Null)
}

/// A file name for a service's dump (service names may contain `/`).
fn dump_name(service: &str, tag: &str) -> String {
    let hex: String = service.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{tag}")
}
