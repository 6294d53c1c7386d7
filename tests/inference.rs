//! Target inference against a stub Kubernetes API server reached through a kubeconfig (runtime
//! spec §4.2, §4.3): the kinds, order, name matching, namespace and context of real
//! `mirrord up`, the exact requests, the time bounds and one-line errors, and agreement with the
//! real `mirrord ls -o json` answering from the same stub.
//!
//! Every command runs with `KUBECONFIG` at the stub's kubeconfig and `HOME` in a tempdir, so
//! nothing here can reach a real cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::kube_stub::{self as ks, KubeConfig, Stub};
use common::{Out, Project, Running};

/// Namespace `staging` (the current context's) of the stub cluster:
/// * deployments `api` (1 available replica) and `worker` (none: `mirrord ls` hides it);
/// * statefulsets `db` and `api` on the first page, `cache` on the second (`continue`);
/// * rollouts `roll` and `db`;
/// * Running pods: `api-7d9-abc`; `web` (istio-proxy, web, sidecar); `single` (single,
///   linkerd-proxy); `sleepy` (not Ready); `roll`.
///
/// Namespace `prod`: deployment `elsewhere`.
fn cluster() -> BTreeMap<String, (u16, String)> {
    let ok = |body: String| (200u16, body);
    let mut routes = BTreeMap::new();
    routes.insert(
        ks::deployments("staging"),
        ok(ks::list(
            json!([
                {"metadata": {"name": "api"}, "status": {"availableReplicas": 1}},
                {"metadata": {"name": "worker"}, "spec": {"replicas": 0}, "status": {}}
            ]),
            None,
        )),
    );
    routes.insert(
        ks::statefulsets("staging"),
        ok(ks::list(ks::named(&["db", "api"]), Some("page-2"))),
    );
    routes.insert(
        format!("{}&continue=page-2", ks::statefulsets("staging")),
        ok(ks::list(ks::named(&["cache"]), None)),
    );
    routes.insert(
        ks::rollouts("staging"),
        ok(ks::list(ks::named(&["roll", "db"]), None)),
    );
    routes.insert(
        ks::pods("staging"),
        ok(ks::list(
            json!([
                ks::pod("api-7d9-abc", &["api"], true),
                ks::pod("web", &["istio-proxy", "web", "sidecar"], true),
                ks::pod("single", &["single", "linkerd-proxy"], true),
                ks::pod("sleepy", &["sleepy"], false),
                ks::pod("roll", &["roll"], true),
            ]),
            None,
        )),
    );
    routes.insert(
        ks::deployments("prod"),
        ok(ks::list(ks::named(&["elsewhere"]), None)),
    );
    for empty in [ks::statefulsets("prod"), ks::pods("prod")] {
        routes.insert(empty, ok(ks::list(json!([]), None)));
    }
    routes
}

/// What real `mirrord up` infers for each service of `cluster()` (runtime §4.2).
const EXPECTED: &[(&str, &str)] = &[
    ("api", "deployment/api"),
    ("worker", "deployment/worker"),
    ("db", "statefulset/db"),
    ("cache", "statefulset/cache"),
    ("roll", "rollout/roll"),
    ("web", "pod/web/container/web"),
    ("single", "pod/single"),
];

fn services_yaml(names: &[&str], extra: &str) -> String {
    let mut text = String::from("services:\n");
    for n in names {
        text.push_str(&format!("  {n}:\n    run: {{command: [\"./{n}\"]}}\n"));
    }
    text.push_str(extra);
    text
}

/// `mirrord-up config` on `project` with the stub's kubeconfig and a private HOME.
fn run(project: &Project, kube: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = project.command(args);
    cmd.env("KUBECONFIG", kube).env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running::start(cmd, format!("mirrord-up {}", args.join(" "))).wait()
}

fn targets(out: &Out) -> BTreeMap<String, Value> {
    let all: BTreeMap<String, Value> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("config prints JSON ({e}): {out}"));
    all.into_iter()
        .map(|(k, v)| (k, v.pointer("/target").cloned().unwrap_or(Value::Null)))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A statefulset (on the second page), a deployment with 0 replicas, a rollout and pods are
/// inferred as real `up` does, in its kind order and by exact name; a namespace is listed once
/// for all of its services, with exactly the requests of runtime §4.3.
#[test]
fn infers_every_kind_like_real_up() {
    let stub = Stub::start(cluster());
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-kinds");
    let names: Vec<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    project.write_yaml(&services_yaml(
        &names,
        "  elsewhere:\n    target: {namespace: prod}\n    run: {command: [\"./e\"]}\n",
    ));
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let got = targets(&out);
    for (name, path) in EXPECTED {
        assert_eq!(
            got[*name],
            json!({"path": path}),
            "{name}: namespace from the context, so none is written"
        );
    }
    assert_eq!(
        got["elsewhere"],
        json!({"path": "deployment/elsewhere", "namespace": "prod"})
    );

    let mut expected = ks::inference_requests("staging");
    expected.push(format!("{}&continue=page-2", ks::statefulsets("staging")));
    expected.extend(ks::inference_requests("prod"));
    assert_eq!(
        sorted(stub.requests()),
        sorted(expected),
        "each namespace listed once, with §4.3's paths and query strings"
    );
}

/// The namespace is the context's, else `default`; the context is `--context`, else the
/// service's `context`, else `common.context`, else the current one; an unknown context is a
/// one-line error naming it.
#[test]
fn namespace_and_context_come_from_the_kubeconfig() {
    let mut routes = cluster();
    routes.insert(
        ks::deployments("default"),
        (200, ks::list(ks::named(&["other", "api"]), None)),
    );
    routes.insert(ks::pods("default"), (200, ks::list(json!([]), None)));
    let stub = Stub::start(routes);
    let kube = KubeConfig::write(
        &stub.url(),
        &[
            ("main", Some("staging")),
            ("bare", None),
            ("also-bare", None),
        ],
    );
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-context");
    project.write_yaml(&services_yaml(
        &["api"],
        "  other:\n    context: bare\n    run: {command: [\"./o\"]}\n",
    ));
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let got = targets(&out);
    assert_eq!(got["api"], json!({"path": "deployment/api"}));
    assert_eq!(got["other"], json!({"path": "deployment/other"}));
    let mut expected = ks::inference_requests("staging");
    expected.push(format!("{}&continue=page-2", ks::statefulsets("staging")));
    expected.extend(ks::inference_requests("default"));
    assert_eq!(sorted(stub.requests()), sorted(expected));

    // `--context` beats the service's context: both services look in `default`.
    let out = run(
        &project,
        kube.path(),
        home.path(),
        &["--context", "also-bare", "config"],
        &[],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let got = targets(&out);
    assert_eq!(got["api"], json!({"path": "deployment/api"}));
    assert_eq!(got["other"], json!({"path": "deployment/other"}));

    // A context the kubeconfig does not have.
    let out = run(
        &project,
        kube.path(),
        home.path(),
        &["--context", "nope", "config", "api"],
        &[],
    );
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains("services.api.target: cannot infer the target using context \"nope\""),
        "{out}"
    );
}

/// An API server that refuses connections, or one that never answers: one line per service,
/// naming it, the namespace and the server, within a bounded time (`MIRRORD_UP_KUBE_TIMEOUT`),
/// and each namespace is asked once, not once per service.
#[test]
fn unreachable_api_is_one_line_per_service_within_bounded_time() {
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-unreachable");
    project.write_yaml(&services_yaml(&["api", "web", "db"], ""));

    // Refused: a port that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let kube = KubeConfig::write(&server, &[("main", Some("staging"))]);
    let started = Instant::now();
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
    assert_eq!(out.code, Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 4, "a heading and one line per service: {out}");
    assert!(
        lines[0].ends_with("cannot infer the target of 3 services:"),
        "{out}"
    );
    for service in ["api", "web", "db"] {
        let line = lines
            .iter()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("services.{service}.target: "))
            })
            .unwrap_or_else(|| panic!("no line for {service}: {out}"));
        assert!(line.contains("namespace \"staging\""), "{line}");
        assert!(line.contains(&server), "{line}");
        assert!(line.to_lowercase().contains("connection refused"), "{line}");
        assert!(!line.contains('{'), "no raw JSON: {line}");
    }

    // Silent: the requests arrive, no answer ever comes.
    let stub = Stub::silent();
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let started = Instant::now();
    let out = run(
        &project,
        kube.path(),
        home.path(),
        &["config"],
        &[("MIRRORD_UP_KUBE_TIMEOUT", "1")],
    );
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        took < Duration::from_secs(5),
        "gave up after {took:?}: {out}"
    );
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for line in &lines[1..] {
        assert!(
            line.contains("no answer within 1s (set MIRRORD_UP_KUBE_TIMEOUT to wait longer)"),
            "{line}"
        );
    }
    assert_eq!(
        sorted(stub.requests()),
        sorted(ks::inference_requests("staging")),
        "one listing for the three services"
    );
}

/// Errors listing statefulsets (403) and rollouts (404: no Argo CRD) count as none of that kind,
/// as in real `up`, and the no-match error lists the candidates and names what could not be
/// listed; a pod list error is fatal and readable (no raw JSON).
#[test]
fn list_errors_follow_real_up() {
    let mut routes = cluster();
    routes.insert(
        ks::statefulsets("staging"),
        (
            403,
            ks::status(
                403,
                "Forbidden",
                "statefulsets.apps is forbidden: User \"tester\" cannot list resource \"statefulsets\"",
            ),
        ),
    );
    routes.remove(&ks::rollouts("staging"));
    let stub = Stub::start(routes.clone());
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-errors");
    project.write_yaml(&services_yaml(&["api", "cache"], ""));
    let out = run(&project, kube.path(), home.path(), &["config", "api"], &[]);
    assert_eq!(out.code, Some(0), "{out}");

    let out = run(
        &project,
        kube.path(),
        home.path(),
        &["config", "cache"],
        &[],
    );
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains(
            "services.cache.target: no workload named \"cache\" found in namespace \"staging\"; candidates seen: deployment/api, deployment/worker, pod/api-7d9-abc, pod/web/container/web, pod/web/container/sidecar, pod/single, pod/roll"
        ),
        "{line}"
    );
    assert!(
        line.contains(
            "(not listed: statefulsets (HTTP 403 Forbidden: statefulsets.apps is forbidden: User \"tester\" cannot list resource \"statefulsets\"))"
        ),
        "{line}"
    );
    assert!(
        !line.contains("rollout"),
        "a 404 for rollouts is silent: {line}"
    );

    routes.insert(
        ks::pods("staging"),
        (
            500,
            ks::status(500, "InternalError", "etcdserver: request timed out"),
        ),
    );
    let stub = Stub::start(routes);
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let out = run(&project, kube.path(), home.path(), &["config", "api"], &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains(&format!(
            "services.api.target: cannot infer the target: listing workloads in namespace \"staging\" at {} failed: cannot list pods: HTTP 500 InternalError: etcdserver: request timed out",
            stub.url()
        )),
        "{line}"
    );
    assert!(!line.contains('{'), "no raw JSON: {line}");
}

/// `common.accept_invalid_certificates: true` lets inference talk to an API server whose
/// certificate nobody trusts; without it, the error is one line that names the cause.
#[test]
fn accept_invalid_certificates_is_honoured() {
    let stub = Stub::start_tls(cluster());
    let kube = KubeConfig::write(&stub.https_url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-tls");
    project.write_yaml(&services_yaml(&["api"], ""));
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains("services.api.target: cannot infer the target"),
        "{line}"
    );
    assert!(line.contains("certificate"), "{line}");

    project.write_yaml(&format!(
        "common:\n  accept_invalid_certificates: true\n{}",
        services_yaml(&["api"], "")
    ));
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(targets(&out)["api"], json!({"path": "deployment/api"}));
}

/// No kubeconfig at all: one line naming the cause, once.
#[test]
fn missing_kubeconfig_is_one_line() {
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-nokube");
    project.write_yaml(&services_yaml(&["api"], ""));
    let missing = home.path().join("missing-kubeconfig");
    let out = run(&project, &missing, home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(1), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains("services.api.target: cannot infer the target: cannot load the kubeconfig: "),
        "{line}"
    );
    assert_eq!(
        line.matches("missing-kubeconfig").count(),
        1,
        "the cause once: {line}"
    );
}

/// `up -d` (whose supervisor resolves targets inside its own async runtime) starts the service
/// with the inferred target and keeps it in the state; a later `plan` asks the cluster nothing.
#[test]
fn up_keeps_inferred_targets_in_the_state() {
    let stub = Stub::start(cluster());
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-up");
    project.write_yaml("services:\n  api:\n    run: {command: [\"sleep\", \"1000\"]}\n");
    let out = run(&project, kube.path(), home.path(), &["up", "-d"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let rows = project.ps();
    assert!(
        rows.iter().any(|r| r["name"] == "api"),
        "api is running: {rows:?}"
    );
    let state = project.state_value().expect("state file");
    assert_eq!(
        state["target_cache"],
        json!({"||api": "deployment/api"}),
        "{state}"
    );
    let asked = stub.requests().len();
    assert!(asked >= 4, "{:?}", stub.requests());
    let out = run(&project, kube.path(), home.path(), &["plan"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(stub.requests().len(), asked, "the cached target is used");
}

/// With `--launcher local` nothing is inferred and the cluster is not asked.
#[test]
fn local_launcher_asks_nothing() {
    let stub = Stub::start(cluster());
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");
    let project = Project::new("infer-local");
    project.write_yaml(&services_yaml(&["api"], ""));
    let out = run(
        &project,
        kube.path(),
        home.path(),
        &["--launcher", "local", "config"],
        &[],
    );
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(stub.requests(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// The real mirrord as the oracle

/// `mirrord ls -o json [-f config]` against the stub: the listed paths and the requests made.
fn real_ls(mirrord: &Path, kube: &Path, home: &Path, config: Option<&Path>) -> Vec<String> {
    let mut cmd = Command::new(mirrord);
    cmd.args(["ls", "-o", "json"]);
    if let Some(c) = config {
        cmd.arg("-f").arg(c);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("MIRRORD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("KUBECONFIG", kube)
        .env("HOME", home)
        .env("TMPDIR", home)
        .env("MIRRORD_CHECK_VERSION", "false")
        .env("MIRRORD_TELEMETRY", "false");
    let out = Running::start(cmd, "mirrord ls -o json".to_owned()).wait();
    assert_eq!(out.code, Some(0), "real mirrord ls: {out}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("ls output ({e}): {out}"))
}

/// `mirrord up`'s rule applied to a listing: the first path in kind order whose name is `name`.
fn pick<'a>(listing: &'a [String], name: &str) -> Option<&'a str> {
    ["deployment", "statefulset", "rollout", "pod"]
        .iter()
        .find_map(|kind| {
            listing.iter().find(|p| {
                let mut parts = p.split('/');
                parts.next() == Some(kind) && parts.next() == Some(name)
            })
        })
        .map(String::as_str)
}

/// The same stub answers the real `mirrord ls -o json`. With the operator object present, `ls`
/// lists every kind with `up`'s rules, and our inference agrees with it for every service, with
/// the same list requests. Without the operator (`operator: false`), `ls` hides statefulsets and
/// the deployment without an available replica (why we no longer ask `ls`), and for the kinds it
/// lists we still agree.
#[test]
fn real_mirrord_ls_agrees_on_the_kinds_it_lists() {
    let Some(mirrord) = common::real_mirrord() else {
        return;
    };
    let mut routes = cluster();
    routes.insert(
        ks::OPERATOR.to_owned(),
        (
            200,
            json!({"apiVersion": "operator.metalbear.co/v1", "kind": "MirrordOperator",
                   "metadata": {"name": "operator"},
                   "spec": {"operator_version": "3.130.0", "default_namespace": "mirrord",
                            "supported_features": ["ProxyApi"],
                            "license": {"name": "t", "organization": "o", "expire_at": "2099-01-01",
                                        "fingerprint": null, "subscription_id": null},
                            "protocol_version": "1.20.0", "operator_namespace": "mirrord"}})
            .to_string(),
        ),
    );
    let stub = Stub::start(routes);
    let kube = KubeConfig::write(&stub.url(), &[("main", Some("staging"))]);
    let home = tempfile::tempdir().expect("home");

    // Ours.
    let project = Project::new("infer-oracle");
    let names: Vec<&str> = EXPECTED.iter().map(|(n, _)| *n).collect();
    project.write_yaml(&services_yaml(&names, ""));
    let out = run(&project, kube.path(), home.path(), &["config"], &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let ours = targets(&out);
    let our_requests = stub.requests();

    // Real `ls` with the operator: every kind, `up`'s semantics.
    let listing = real_ls(&mirrord, kube.path(), home.path(), None);
    let ls_requests: Vec<String> = stub.requests()[our_requests.len()..].to_vec();
    for (name, _) in EXPECTED {
        let theirs = pick(&listing, name)
            .unwrap_or_else(|| panic!("real ls lists nothing named {name}: {listing:?}"));
        assert_eq!(
            ours[*name],
            json!({"path": theirs}),
            "{name} vs {listing:?}"
        );
    }
    for request in ks::inference_requests("staging") {
        assert!(
            ls_requests.contains(&request),
            "real ls did not request {request}: {ls_requests:?}"
        );
    }
    assert!(
        ls_requests.contains(&format!("{}&continue=page-2", ks::statefulsets("staging"))),
        "real ls follows `continue` as we do: {ls_requests:?}"
    );

    // Real `ls` without the operator: pods, available deployments, rollouts only.
    let config = home.path().join("no-operator.json");
    std::fs::write(&config, r#"{"operator": false}"#).expect("write config");
    let listing = real_ls(&mirrord, kube.path(), home.path(), Some(&config));
    assert!(
        !listing.iter().any(|p| p.starts_with("statefulset/")),
        "{listing:?}"
    );
    assert!(
        !listing.contains(&"deployment/worker".to_owned()),
        "{listing:?}"
    );
    let mut compared = 0;
    for (name, _) in EXPECTED {
        if let Some(theirs) = pick(&listing, name)
            && !["db", "cache"].contains(name)
        {
            assert_eq!(
                ours[*name],
                json!({"path": theirs}),
                "{name} vs {listing:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(
        compared, 4,
        "api, roll, web and single are listed by OSS ls: {listing:?}"
    );
}
