//! Compatibility corpus: every `fixtures/compat/valid/*.yaml` produces the pinned mirrord.json
//! set, each of which validates against mirrord 3.250.0's published JSON schema; every
//! `fixtures/compat/invalid/*.yaml` is refused with the expected message, a line and column, and
//! a key path. Plus `plan`/`config` on the demo project and the worked example of
//! mirrord-compat §2.5, checked field by field.
//!
//! Snapshots live in `tests/snapshots/{compat,invalid}`; to re-accept them after an intended
//! change run `INSTA_UPDATE=always cargo test --test compat` and review the diff.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command as Cmd;
use regex::Regex;
use serde_json::Value;

mod common;

use common::fake_mirrord;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A stub Kubernetes API (tests/common/kube_stub.rs) that holds, so that inference succeeds for
/// every fixture service without `target.path`: `api` and `web` (minimal, ext-full), the five
/// forms of target-unspecified, and `ns-only`, which exists only in namespace `staging`. A
/// statefulset `web` and a pod `api` check the kind priority (deployment wins over both). The
/// kubeconfig's current context has no namespace, so the others are looked up in `default`.
/// Started once for the whole test binary; returns the kubeconfig's path.
fn stub_cluster() -> &'static Path {
    use common::kube_stub as ks;
    static KUBECONFIG: std::sync::OnceLock<(ks::Stub, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = KUBECONFIG.get_or_init(|| {
        let ok = |items| (200u16, ks::list(items, None));
        let mut routes = std::collections::BTreeMap::new();
        routes.insert(
            ks::deployments("default"),
            ok(ks::named(&[
                "api",
                "web",
                "absent",
                "tilde",
                "null-word",
                "empty",
                "empty-map",
            ])),
        );
        routes.insert(ks::statefulsets("default"), ok(ks::named(&["web"])));
        routes.insert(
            ks::pods("default"),
            ok(serde_json::json!([ks::pod("api", &["api"], true)])),
        );
        routes.insert(ks::deployments("staging"), ok(ks::named(&["ns-only"])));
        routes.insert(ks::pods("staging"), ok(serde_json::json!([])));
        let stub = ks::Stub::start(routes);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("compat-kubeconfig-{}", std::process::id()));
        std::fs::write(&path, ks::kubeconfig_text(&stub.url(), &[("stub", None)]))
            .expect("write kubeconfig");
        (stub, path)
    });
    path
}

/// Variables of the invoking shell that would change what the binary does.
const SCRUBBED_ENV: &[&str] = &[
    "MIRRORD_UP_FILE",
    "MIRRORD_UP_PROJECT",
    "MIRRORD_UP_STATE_DIR",
    "MIRRORD_UP_LAUNCHER",
    "MIRRORD_UP_KEY",
    "MIRRORD_BIN",
    "MIRRORD_UP_FIXTURE_UNSET",
    "FAKE_MIRRORD_LOG",
];

fn repo() -> &'static Path {
    Path::new(REPO)
}

/// The binary under test, with a clean environment and no colour.
fn mirrord_up() -> Cmd {
    let mut cmd = Cmd::new(env!("CARGO_BIN_EXE_mirrord-up"));
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    // No test reaches a real cluster: those that infer use `stub_cluster()`.
    cmd.env("NO_COLOR", "1")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("MIRRORD_BRANCH_NAME", "main")
        .current_dir(repo());
    cmd
}

/// `mirrord-up config -f F -k alice --mirrord-bin <fake> --state-dir <fresh tempdir> [args…]`,
/// inferring targets from `stub_cluster()`.
fn run_config(file: &Path, extra: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("tempdir");
    mirrord_up()
        .arg("config")
        .args(extra)
        .arg("-f")
        .arg(file)
        .args(["-k", "alice", "--mirrord-bin"])
        .arg(fake_mirrord())
        .arg("--state-dir")
        .arg(state.path())
        .env("KUBECONFIG", stub_cluster())
        .output()
        .expect("run mirrord-up config")
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    common::compat_fixtures(kind)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// Values of `# <tag>: …` lines in the fixture's leading comment block.
fn header(path: &Path, tag: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let prefix = format!("# {tag}: ");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `check` for every item, collecting failures instead of stopping at the first one.
fn check_all<T>(
    items: &[T],
    name: impl Fn(&T) -> String,
    check: impl Fn(&T) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    for item in items {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(item)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => failures.push(format!("{}: {msg}", name(item))),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                failures.push(format!("{}: {msg}", name(item)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n\n{}",
        failures.len(),
        items.len(),
        failures.join("\n\n")
    );
}

fn repo_filter() -> String {
    regex::escape(REPO)
}

// ---------------------------------------------------------------------------------------------
// a. valid fixtures: `config` output pinned

#[test]
fn valid_fixtures_generate_the_pinned_configs() {
    let files = fixtures("valid");
    let filter = repo_filter();
    check_all(
        &files,
        |f| stem(f),
        |file| {
            let out = run_config(file, &[]);
            if !out.status.success() {
                return Err(format!("`config` did not exit 0\n{}", describe(&out)));
            }
            let stdout = text(&out.stdout);
            serde_json::from_str::<Value>(&stdout)
                .map_err(|e| format!("stdout is not JSON: {e}\n{stdout}"))?;
            let covers = header(file, "Covers").join(" ");
            insta::with_settings!({
                snapshot_path => "snapshots/compat",
                prepend_module_to_snapshot => false,
                description => covers,
                filters => vec![(filter.as_str(), "[REPO]")],
            }, {
                insta::assert_snapshot!(stem(file), stdout);
            });
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// b. every generated mirrord.json validates against mirrord's published schema

fn schema_path() -> PathBuf {
    repo().join("../shared/mirrord/mirrord-schema-3.250.0.json")
}

#[test]
fn generated_configs_validate_against_mirrord_schema() {
    let path = schema_path();
    if !path.is_file() {
        let msg = format!(
            "mirrord's JSON schema is missing at {}: generated configs were NOT validated",
            path.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg} (fatal with CI=true)");
        }
        eprintln!("note: {msg}");
        return;
    }
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read schema"))
        .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("mirrord's schema compiles");
    // The schema is strict enough to catch a wrong generator (so passing below means something).
    for bad in [
        serde_json::json!({"feature": {"network": {"incoming": {"mode": "bogus"}}}}),
        serde_json::json!({"feature": {"copy_target": {"enabled": "yes"}}}),
        serde_json::json!({"feature": {"network": {"incoming": {"ignore_ports": [70000]}}}}),
    ] {
        assert!(!validator.is_valid(&bad), "the schema accepts {bad}");
    }
    let files = fixtures("valid");
    check_all(
        &files,
        |f| stem(f),
        |file| {
            let out = run_config(file, &[]);
            if !out.status.success() {
                return Err(format!("`config` did not exit 0\n{}", describe(&out)));
            }
            let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let services = all.as_object().ok_or("stdout is not a JSON object")?;
            if services.is_empty() {
                return Err("no services in the output".into());
            }
            let mut errors = Vec::new();
            for (service, config) in services {
                for e in validator.iter_errors(config) {
                    errors.push(format!(
                        "  service `{service}`: at `{}`: {e}",
                        e.instance_path()
                    ));
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "generated mirrord.json does not validate against {}:\n{}",
                    path.display(),
                    errors.join("\n")
                ))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// c. invalid fixtures: refused with the expected message, position and key path

/// Errors that legitimately carry no key path (none today: YAML syntax errors name the key
/// enclosing their line). Top-level `unknown field`/`missing field` errors are checked separately.
const NO_KEY_PATH: &[&str] = &[];

#[test]
fn invalid_fixtures_are_refused_with_position_and_key_path() {
    let files = fixtures("invalid");
    let filter = repo_filter();
    let position = Regex::new(r"line \d+ column \d+").unwrap();
    // `error: <what>: <key path>: <message>`, the key path rooted at `services` or `common`.
    let key_path = Regex::new(
        r"(?m)^error: (?:failed to parse mirrord-up config|invalid mirrord-up config|failed to template with tera): (?:(?:services|common)(?:[.\[][^:]*)?: |(?:unknown|missing) field `)",
    )
    .unwrap();
    for name in NO_KEY_PATH {
        assert!(
            files.iter().any(|f| stem(f) == *name),
            "NO_KEY_PATH names a fixture that does not exist: {name}"
        );
    }
    check_all(
        &files,
        |f| stem(f),
        |file| {
            let state = tempfile::tempdir().expect("tempdir");
            let out = mirrord_up()
                .arg("check")
                .arg("-f")
                .arg(file)
                .args(["-k", "alice"])
                .env("XDG_STATE_HOME", state.path())
                .output()
                .expect("run mirrord-up check");
            let stderr = text(&out.stderr);
            let mut problems = Vec::new();
            if out.status.code() != Some(1) {
                problems.push("expected exit code 1".to_owned());
            }
            let expects = header(file, "expect");
            if expects.is_empty() {
                problems.push("fixture has no `# expect:` line".to_owned());
            }
            for e in expects {
                if !stderr.contains(&e) {
                    problems.push(format!("stderr lacks the expected text `{e}`"));
                }
            }
            for loc in header(file, "location") {
                if !stderr.contains(&loc) {
                    problems.push(format!("stderr lacks the expected position `{loc}`"));
                }
            }
            if !position.is_match(&stderr) {
                problems.push("stderr names no `line L column C` position".to_owned());
            }
            if !stderr.contains(&file.display().to_string()) {
                problems.push("stderr does not name the file".to_owned());
            }
            let exempt = NO_KEY_PATH.contains(&stem(file).as_str());
            match (key_path.is_match(&stderr), exempt) {
                (false, false) => problems.push(
                    "stderr names no key path (`services…:`/`common…:`, or a top-level unknown/missing field)"
                        .to_owned(),
                ),
                (true, true) => problems.push(
                    "stderr now names a key path: remove this fixture from NO_KEY_PATH".to_owned(),
                ),
                _ => {}
            }
            if !out.stdout.is_empty() {
                problems.push("stdout is not empty".to_owned());
            }
            if !problems.is_empty() {
                return Err(format!("{}\n{}", problems.join("\n"), describe(&out)));
            }
            insta::with_settings!({
                snapshot_path => "snapshots/invalid",
                prepend_module_to_snapshot => false,
                description => header(file, "INVALID").join(" ").trim().to_owned(),
                filters => vec![(filter.as_str(), "[REPO]")],
            }, {
                insta::assert_snapshot!(stem(file), stderr);
            });
            Ok(())
        },
    );
}

/// Each invalid fixture starts with one `# INVALID: <what is wrong>` line (used as the
/// snapshot's description).
#[test]
fn invalid_fixtures_describe_themselves() {
    for file in fixtures("invalid") {
        assert_eq!(
            header(&file, "INVALID").len(),
            1,
            "{}: expected one `# INVALID: …` header line",
            file.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// d. `plan` and `config` on the demo project

fn demo() -> PathBuf {
    repo().join("fixtures/demo/mirrord-up.yaml")
}

const DEMO_SERVICES: &[&str] = &["api", "db", "web", "worker"];

fn run_local(args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("tempdir");
    mirrord_up()
        .args(args)
        .arg("-f")
        .arg(demo())
        .args(["--launcher", "local", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("run mirrord-up")
}

fn assert_dependency_order(order: &[String]) {
    let pos = |name: &str| {
        order
            .iter()
            .position(|s| s == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    };
    assert!(pos("db") < pos("api"), "db must come before api: {order:?}");
    assert!(
        pos("api") < pos("web"),
        "api must come before web: {order:?}"
    );
    assert!(
        pos("api") < pos("worker"),
        "api must come before worker: {order:?}"
    );
}

#[test]
fn plan_of_the_demo_starts_every_service_in_dependency_order() {
    let out = run_local(&["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let line = Regex::new(r"^start\s+(\S+)\s+(.+)$").unwrap();
    let mut order = Vec::new();
    for l in stdout.lines() {
        if let Some(c) = line.captures(l) {
            assert_eq!(&c[2], "new service", "cause of `{l}`");
            order.push(c[1].to_owned());
        }
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        sorted, DEMO_SERVICES,
        "one start line per service:\n{stdout}"
    );
    assert_dependency_order(&order);
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("restart") || l.starts_with("stop") || l.starts_with("keep")),
        "only start lines expected:\n{stdout}"
    );
}

#[test]
fn plan_json_of_the_demo() {
    // Exit 0 once printed, pending changes or not (`--detailed-exitcode` gives 2).
    let out = run_local(&["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let steps: Value = serde_json::from_slice(&out.stdout).expect("plan --format json is JSON");
    let steps = steps.as_array().expect("a JSON array");
    let mut order = Vec::new();
    for step in steps {
        let obj = step.as_object().expect("each step is an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["action", "cause", "service"], "{step}");
        assert_eq!(obj["action"], "start", "{step}");
        assert_eq!(obj["cause"], "new service", "{step}");
        order.push(obj["service"].as_str().expect("service name").to_owned());
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, DEMO_SERVICES);
    assert_dependency_order(&order);
}

#[test]
fn config_hash_of_the_demo() {
    let out = run_local(&["config", "--hash", "-k", "alice"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let line = Regex::new(r"^(\S+) ([0-9a-f]{64})$").unwrap();
    let mut hashes = std::collections::BTreeMap::new();
    for l in stdout.lines() {
        let c = line
            .captures(l)
            .unwrap_or_else(|| panic!("not `<service> <64 hex>`: {l:?}"));
        assert!(
            hashes.insert(c[1].to_owned(), c[2].to_owned()).is_none(),
            "{} listed twice",
            &c[1]
        );
    }
    assert_eq!(
        hashes.keys().map(String::as_str).collect::<Vec<_>>(),
        DEMO_SERVICES
    );
    let distinct: std::collections::BTreeSet<&String> = hashes.values().collect();
    assert_eq!(
        distinct.len(),
        hashes.len(),
        "services share a hash: {hashes:?}"
    );

    // The library computes the same hashes as the CLI.
    let doc = mirrord_up::config::UpDocument::load(&demo(), Some("alice")).expect("demo loads");
    let desired = mirrord_up::desired::resolve(
        &doc,
        mirrord_up::desired::ResolveOptions {
            selection: &[],
            mode: None,
            context: None,
            launcher: mirrord_up::spec::LauncherKind::Local,
            inference: None,
        },
    )
    .expect("demo resolves");
    for spec in &desired.services {
        assert_eq!(
            hashes[&spec.name],
            spec.hash().to_string(),
            "hash of {}",
            spec.name
        );
    }
}

#[test]
fn config_of_one_service_is_its_mirrord_json_alone() {
    let out = run_local(&["config", "db", "-k", "alice"]);
    assert!(out.status.success(), "{}", describe(&out));
    let config: Value = serde_json::from_slice(&out.stdout).expect("config db is JSON");
    let obj = config.as_object().expect("a single JSON object");
    assert_eq!(obj.get("key"), Some(&Value::from("alice")), "{config:#}");
    assert!(obj.contains_key("feature"), "{config:#}");
    for other in ["api", "web", "worker", "db"] {
        assert!(
            !obj.contains_key(other),
            "keyed by service name: {config:#}"
        );
    }
    assert_eq!(
        config.pointer("/target/path"),
        Some(&Value::from("deployment/db"))
    );
    assert_eq!(
        config.pointer("/feature/env/override/DB_PORT"),
        Some(&Value::from("5432"))
    );
}

// ---------------------------------------------------------------------------------------------
// e. the worked example of mirrord-compat §2.5

#[test]
fn worked_example_matches_compat_2_5() {
    let file = repo().join("fixtures/compat/valid/worked-example.yaml");
    let out = run_config(&file, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let all: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&String> = all.as_object().expect("object").keys().collect();
    assert_eq!(names, ["api", "web"]);

    for (name, cfg) in all.as_object().unwrap() {
        assert_eq!(cfg["key"], "alice", "{name}");
        assert_eq!(cfg["operator"], true, "{name}");
        assert_eq!(cfg["accept_invalid_certificates"], true, "{name}");
        assert_eq!(cfg["telemetry"], false, "{name}");
        assert_eq!(
            cfg.pointer("/feature/network/incoming/mode"),
            Some(&Value::from("steal")),
            "{name}: steal in both modes"
        );
        let queues = cfg
            .pointer("/feature/split_queues")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{name}: split_queues list"));
        let expected = [
            ("SQS", ".MessageAttributes"),
            ("Kafka", ".headers"),
            ("GCPPubSub", ".attributes"),
            ("AzureServiceBus", ".application_properties"),
            ("RedisPubSub", "."),
            ("Temporal", ".header"),
            ("BullMQ", "."),
        ];
        assert_eq!(queues.len(), 7, "{name}: seven split_queues");
        for (q, (queue_type, selector)) in queues.iter().zip(expected) {
            assert_eq!(q["queue_id"], "*", "{name}");
            assert_eq!(q["queue_type"], queue_type, "{name}");
            assert_eq!(
                q["jq_filter"],
                format!(
                    "({selector} // {{}}) | [.. | select(type == \"string\" and contains(\"mirrord-session=alice\"))] | length > 0"
                ),
                "{name}: {queue_type}"
            );
            assert!(q.get("queue_mode").is_none(), "{name}: default queue_mode");
        }
    }

    let api = &all["api"];
    assert_eq!(
        api.pointer("/target/path"),
        Some(&Value::from("deployment/api"))
    );
    assert_eq!(
        api.pointer("/target/namespace"),
        Some(&Value::from("staging"))
    );
    assert_eq!(
        api.pointer("/feature/env/override/SESSION"),
        Some(&Value::from("alice"))
    );
    assert_eq!(
        api.pointer("/feature/network/incoming/http_filter"),
        Some(
            &serde_json::json!({"header_filter": r"baggage:(?:.*[,\s])?mirrord-session=alice(?:[,;\s]|$).*"})
        )
    );
    assert_eq!(
        api.pointer("/feature/network/incoming/ignore_ports"),
        Some(&serde_json::json!([9090, 15090]))
    );
    assert!(api.pointer("/feature/copy_target").is_none());
    assert!(api.get("kube_context").is_none());

    let web = &all["web"];
    assert_eq!(
        web.pointer("/target/path"),
        Some(&Value::from("deployment/web"))
    );
    assert!(web.pointer("/target/namespace").is_none());
    assert_eq!(
        web.pointer("/feature/copy_target"),
        Some(&serde_json::json!({"enabled": true, "scale_down": true}))
    );
    assert!(
        web.pointer("/feature/network/incoming/http_filter")
            .is_none(),
        "replace mode has no http_filter: {web:#}"
    );
    assert!(web.pointer("/feature/env").is_none());
    assert!(
        web.pointer("/feature/network/incoming/ignore_ports")
            .is_none()
    );

    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().any(|l| l
            == "web: `http_filter` is ignored in `replace` mode, all incoming traffic is handled locally"),
        "missing the replace-mode warning:\n{stderr}"
    );
    assert!(!stderr.contains("api:"), "no warning for api:\n{stderr}");
}

/// The same example, `config api` alone: the service's mirrord.json, not the map of all.
#[test]
fn worked_example_single_service() {
    let file = repo().join("fixtures/compat/valid/worked-example.yaml");
    let out = run_config(&file, &["api"]);
    assert!(out.status.success(), "{}", describe(&out));
    let api: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(api["key"], "alice");
    assert_eq!(
        api.pointer("/target/path"),
        Some(&Value::from("deployment/api"))
    );
    assert!(
        !text(&out.stderr).contains("web:"),
        "a warning about an unselected service:\n{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Deliberate improvements of mirrord-up.md §4.1 that show in the generated configs

/// The session key is regex-escaped in the default header filter, and only there (the jq
/// filters use `contains`, which is literal).
#[test]
fn session_key_is_regex_escaped_in_the_default_filter_only() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = mirrord_up()
        .arg("config")
        .arg("-f")
        .arg(repo().join("fixtures/compat/valid/common-empty.yaml"))
        .args(["-k", "john.doe+1", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("run mirrord-up config");
    assert!(out.status.success(), "{}", describe(&out));
    let all: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let api = &all["api"];
    assert_eq!(api["key"], "john.doe+1");
    assert_eq!(
        api.pointer("/feature/network/incoming/http_filter/header_filter"),
        Some(&Value::from(
            r"baggage:(?:.*[,\s])?mirrord-session=john\.doe\+1(?:[,;\s]|$).*"
        ))
    );
    let jq = api
        .pointer("/feature/split_queues/0/jq_filter")
        .and_then(Value::as_str)
        .expect("jq filter");
    assert!(
        jq.contains(r#"contains("mirrord-session=john.doe+1")"#),
        "{jq}"
    );
}

/// No `MIRRORD_*` variable of the invoking shell changes the generated configs (real mirrord
/// lets them leak into every service and override `common`, compat §2.1).
#[test]
fn mirrord_environment_variables_do_not_leak_into_configs() {
    let file = repo().join("fixtures/compat/valid/worked-example.yaml");
    let run = |leaky: bool| {
        let state = tempfile::tempdir().expect("tempdir");
        let mut cmd = mirrord_up();
        cmd.arg("config")
            .arg("-f")
            .arg(&file)
            .args(["-k", "alice", "--state-dir"])
            .arg(state.path());
        if leaky {
            for (k, v) in [
                ("MIRRORD_TELEMETRY", "true"),
                ("MIRRORD_OPERATOR_ENABLE", "false"),
                ("MIRRORD_ACCEPT_INVALID_CERTIFICATES", "false"),
                ("MIRRORD_AGENT_NAMESPACE", "leaked"),
                ("MIRRORD_HTTP_HEADER_FILTER", "x-leaked: yes"),
                ("MIRRORD_KEY", "bob"),
                ("MIRRORD_IMPERSONATED_TARGET", "pod/leaked"),
                ("MIRRORD_TARGET_NAMESPACE", "leaked"),
                ("MIRRORD_OVERRIDE_ENV_VARS_INCLUDE", "LEAKED"),
                ("MIRRORD_CONFIG_FILE", "/nonexistent/mirrord.json"),
            ] {
                cmd.env(k, v);
            }
        }
        let out = cmd.output().expect("run mirrord-up config");
        assert!(out.status.success(), "{}", describe(&out));
        text(&out.stdout)
    };
    let clean = run(false);
    let leaky = run(true);
    assert_eq!(
        clean, leaky,
        "MIRRORD_* variables changed the generated configs"
    );
    assert!(
        !leaky.contains("leaked") && !leaky.contains("bob"),
        "{leaky}"
    );
}
