//! Target inference as real `mirrord up` does it (runtime spec §4.2): a service without
//! `target.path` (and not `target: none`) targets the first deployment, statefulset, rollout or
//! pod whose name equals the service's name, listed from the Kubernetes API directly (no
//! `mirrord ls`, no operator), with the requests of runtime spec §4.3.
//!
//! * Kinds, in priority order: deployment, statefulset, rollout, pod; the four are listed
//!   concurrently with `labelSelector=app!=mirrord,!operator.metalbear.co/owner`, `limit=500`,
//!   following `metadata.continue`.
//! * Every deployment, statefulset and rollout counts (no replica check); an error listing one of
//!   these kinds counts as "none of that kind" (a 404 for rollouts means that the Argo CRD is not
//!   installed). Pods are listed with `fieldSelector=status.phase=Running` and kept when their
//!   `Ready` condition is `True`; mesh and agent sidecars are not containers of the app; a pod with
//!   several containers gives `pod/<name>/container/<first>`. A pod list error is fatal.
//! * Namespace: `target.namespace`, else the kubeconfig context's namespace, else `default`.
//!   Context: the service's effective `kube_context`, else the current context. One client per
//!   distinct context; `common.accept_invalid_certificates` is honoured.
//!
//! Deliberate differences: each (context, namespace) is listed once per run, not once per
//! service; answers are cached in the state (`context|namespace|service` → path), so a later run
//! asks the cluster only for services it has not resolved yet; every request is bounded in time
//! (`MIRRORD_UP_KUBE_TIMEOUT` seconds, default 10), where real `up` can wait for the OS; a
//! failure is one line per service, naming the namespace, the context and the cause; kinds that
//! could not be listed are named when no workload matches.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{Config, KubeConfigOptions};

use crate::config::TargetPath;

/// Workload kinds tried, in real `mirrord up`'s priority order (`up/src/lib.rs:168-173`).
pub const INFERRED_KINDS: &[&str] = &["deployment", "statefulset", "rollout", "pod"];

/// The label selector of every list call (`seeker.rs:240-305`).
pub const LABEL_SELECTOR: &str = "app!=mirrord,!operator.metalbear.co/owner";
/// Page size of every list call; further pages follow `metadata.continue`.
pub const PAGE_LIMIT: u32 = 500;
/// Containers that are not the app (`kube/src/api/container.rs:18-33`).
pub const SIDECAR_CONTAINERS: &[&str] = &[
    "kuma-sidecar",
    "kuma-init",
    "istio-proxy",
    "istio-init",
    "linkerd-proxy",
    "linkerd-init",
    "vault-agent",
    "vault-agent-init",
    "queue-proxy",
    "traffic-agent",
];

/// Seconds that one request to the Kubernetes API may take (connect, send, answer).
pub const TIMEOUT_ENV: &str = "MIRRORD_UP_KUBE_TIMEOUT";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Infers targets, listing each (context, namespace) at most once; `cache` is kept in the state
/// file between runs.
pub struct TargetInference {
    /// `context|namespace|service` → target path (context and namespace as the file gives them).
    pub cache: BTreeMap<String, String>,
    accept_invalid_certificates: Option<bool>,
    timeout: Duration,
    /// `context|namespace` → the listing, or why it failed (failures are not retried in a run).
    listings: BTreeMap<String, Result<Listing, String>>,
    /// One client per distinct context (`None`: the current context).
    clients: BTreeMap<Option<String>, Result<Connection, String>>,
    runtime: Runtime,
}

#[derive(Clone)]
struct Connection {
    client: Client,
    default_namespace: String,
    server: String,
}

/// What a namespace holds, in inference order.
struct Listing {
    namespace: String,
    paths: Vec<String>,
    /// Kinds whose list call failed and therefore count as empty (as in real `up`), with the
    /// cause; named when nothing matches.
    skipped: Vec<String>,
}

impl TargetInference {
    /// `accept_invalid_certificates` is the file's `common.accept_invalid_certificates` (unset:
    /// the kubeconfig decides).
    pub fn new(
        cache: BTreeMap<String, String>,
        accept_invalid_certificates: Option<bool>,
    ) -> TargetInference {
        // Checked for range when the command starts (`commands::main`); 0 means the default.
        let timeout = crate::secs::secs_env(TIMEOUT_ENV)
            .ok()
            .flatten()
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_TIMEOUT);
        TargetInference {
            cache,
            accept_invalid_certificates,
            timeout,
            listings: BTreeMap::new(),
            clients: BTreeMap::new(),
            runtime: Runtime(None),
        }
    }

    /// The target of service `name`, or one line saying why there is none.
    pub fn infer(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        context: Option<&str>,
    ) -> Result<TargetPath, String> {
        let cache_key = format!(
            "{}|{}|{name}",
            context.unwrap_or_default(),
            namespace.unwrap_or_default()
        );
        if let Some(p) = self.cache.get(&cache_key)
            && let Ok(path) = TargetPath::parse(p)
        {
            return Ok(path);
        }
        let listing_key = format!(
            "{}|{}",
            context.unwrap_or_default(),
            namespace.unwrap_or_default()
        );
        if !self.listings.contains_key(&listing_key) {
            let listing = self.list(namespace, context);
            self.listings.insert(listing_key.clone(), listing);
        }
        let listing = match &self.listings[&listing_key] {
            Ok(listing) => listing,
            Err(e) => return Err(e.clone()),
        };
        match find(&listing.paths, name) {
            Some(p) => {
                let path = TargetPath::parse(p).map_err(|e| {
                    format!("the cluster has a workload `{p}` that is not a valid target: {e}")
                })?;
                self.cache.insert(cache_key, p.to_owned());
                Ok(path)
            }
            None => Err(format!(
                "no workload named \"{name}\" found in namespace \"{}\"{}; candidates seen: {}{}. Set `target.path` explicitly.",
                listing.namespace,
                in_context(context),
                if listing.paths.is_empty() {
                    "none".to_owned()
                } else {
                    listing.paths.join(", ")
                },
                if listing.skipped.is_empty() {
                    String::new()
                } else {
                    format!(" (not listed: {})", listing.skipped.join("; "))
                }
            )),
        }
    }

    fn list(&mut self, namespace: Option<&str>, context: Option<&str>) -> Result<Listing, String> {
        let key = context.map(str::to_owned);
        if !self.clients.contains_key(&key) {
            let accept = self.accept_invalid_certificates;
            let timeout = self.timeout;
            let ctx = key.clone();
            let connection = self
                .runtime
                .run(async move { connect(ctx.as_deref(), accept, timeout).await })
                .and_then(|r| r);
            self.clients.insert(key.clone(), connection);
        }
        let connection = self.clients[&key].clone().map_err(|e| {
            format!(
                "cannot infer the target{}{}: {e}",
                namespace
                    .map(|ns| format!(" in namespace \"{ns}\""))
                    .unwrap_or_default(),
                in_context(context)
            )
        })?;
        let ns = namespace
            .map(str::to_owned)
            .unwrap_or_else(|| connection.default_namespace.clone());
        let timeout = self.timeout;
        let (client, ns2) = (connection.client.clone(), ns.clone());
        let listed = self
            .runtime
            .run(async move { list_namespace(client, &ns2, timeout).await })
            .and_then(|r| r);
        match listed {
            Ok((paths, skipped)) => Ok(Listing {
                namespace: ns,
                paths,
                skipped,
            }),
            Err(e) => Err(format!(
                "cannot infer the target: listing workloads in namespace \"{ns}\"{} at {} failed: {e}",
                in_context(context),
                connection.server
            )),
        }
    }
}

/// The first path, in kind priority order, whose name segment equals `name` exactly.
fn find<'a>(paths: &'a [String], name: &str) -> Option<&'a str> {
    INFERRED_KINDS.iter().find_map(|kind| {
        paths
            .iter()
            .find(|p| {
                let mut parts = p.split('/');
                parts.next() == Some(kind) && parts.next() == Some(name)
            })
            .map(String::as_str)
    })
}

fn in_context(context: Option<&str>) -> String {
    context
        .map(|c| format!(" using context \"{c}\""))
        .unwrap_or_default()
}

/// A client for `context` (or the current one), as `create_kube_config` builds it, plus our
/// time bounds.
async fn connect(
    context: Option<&str>,
    accept_invalid_certificates: Option<bool>,
    timeout: Duration,
) -> Result<Connection, String> {
    let loaded = match context {
        Some(ctx) => {
            let options = KubeConfigOptions {
                context: Some(ctx.to_owned()),
                ..KubeConfigOptions::default()
            };
            tokio::time::timeout(timeout, Config::from_kubeconfig(&options))
                .await
                .map(|r| r.map_err(|e| error_chain(&e)))
        }
        None => tokio::time::timeout(timeout, Config::infer())
            .await
            .map(|r| r.map_err(|e| error_chain(&e))),
    };
    let mut config = loaded
        .map_err(|_| {
            format!(
                "loading the kubeconfig took more than {} (an auth plugin that does not return?)",
                secs(timeout)
            )
        })?
        .map_err(|e| format!("cannot load the kubeconfig: {e}"))?;
    if let Some(accept) = accept_invalid_certificates {
        config.accept_invalid_certs = accept;
    }
    // Our outer timeout (per request) fires first; these only make sure that nothing below it
    // waits longer.
    let inner = timeout + Duration::from_secs(1);
    config.connect_timeout = Some(inner);
    config.read_timeout = Some(inner);
    config.write_timeout = Some(inner);
    config.reset_reader_on_write = true;
    // Real `up` uses a plain client without kube's retry layer.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_owned();
    let default_namespace = config.default_namespace.clone();
    let client = Client::try_from(config)
        .map_err(|e| format!("cannot create a Kubernetes client: {}", error_chain(&e)))?;
    Ok(Connection {
        client,
        default_namespace,
        server,
    })
}

/// The candidates of namespace `ns` in inference order, and the kinds that could not be listed.
async fn list_namespace(
    client: Client,
    ns: &str,
    timeout: Duration,
) -> Result<(Vec<String>, Vec<String>), String> {
    let (deployments, statefulsets, rollouts, pods) = tokio::join!(
        list_kind(&client, ns, ("apps", "v1", "Deployment"), None, timeout),
        list_kind(&client, ns, ("apps", "v1", "StatefulSet"), None, timeout),
        list_kind(
            &client,
            ns,
            ("argoproj.io", "v1alpha1", "Rollout"),
            None,
            timeout
        ),
        list_kind(
            &client,
            ns,
            ("", "v1", "Pod"),
            Some("status.phase=Running"),
            timeout
        ),
    );
    let mut paths = Vec::new();
    let mut skipped = Vec::new();
    for (kind, listed) in [
        ("deployment", deployments),
        ("statefulset", statefulsets),
        ("rollout", rollouts),
    ] {
        match listed {
            Ok(objects) => paths.extend(
                objects
                    .iter()
                    .filter_map(|o| o.metadata.name.as_deref())
                    .map(|n| format!("{kind}/{n}")),
            ),
            // No Argo CRD: no rollouts, nothing worth saying.
            Err(ListError::Api { code: 404, .. }) if kind == "rollout" => {}
            Err(e) => skipped.push(format!("{kind}s ({e})")),
        }
    }
    let pods = pods.map_err(|e| format!("cannot list pods: {e}"))?;
    for pod in &pods {
        paths.extend(pod_paths(pod));
    }
    Ok((paths, skipped))
}

/// `pod/<name>` for a Ready pod with one app container, `pod/<name>/container/<c>` for each
/// app container of a pod with several, nothing otherwise.
fn pod_paths(pod: &DynamicObject) -> Vec<String> {
    let Some(name) = pod.metadata.name.as_deref() else {
        return Vec::new();
    };
    let ready = pod.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    if !ready {
        return Vec::new();
    }
    let containers: Vec<&str> = pod.data["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str())
                .filter(|c| !SIDECAR_CONTAINERS.contains(c))
                .collect()
        })
        .unwrap_or_default();
    match containers.as_slice() {
        [] => Vec::new(),
        [_] => vec![format!("pod/{name}")],
        many => many
            .iter()
            .map(|c| format!("pod/{name}/container/{c}"))
            .collect(),
    }
}

enum ListError {
    Api { code: u16, text: String },
    Timeout(Duration),
    Other(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::Api { text, .. } => f.write_str(text),
            ListError::Timeout(t) => write!(
                f,
                "no answer within {} (set {TIMEOUT_ENV} to wait longer)",
                secs(*t)
            ),
            ListError::Other(e) => f.write_str(e),
        }
    }
}

/// Every object of one kind in `ns`, page by page.
async fn list_kind(
    client: &Client,
    ns: &str,
    (group, version, kind): (&str, &str, &str),
    fields: Option<&str>,
    timeout: Duration,
) -> Result<Vec<DynamicObject>, ListError> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let mut params = ListParams::default()
        .labels(LABEL_SELECTOR)
        .limit(PAGE_LIMIT);
    if let Some(fields) = fields {
        params = params.fields(fields);
    }
    let mut out = Vec::new();
    loop {
        let page = tokio::time::timeout(timeout, api.list(&params))
            .await
            .map_err(|_| ListError::Timeout(timeout))?
            .map_err(list_error)?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

fn list_error(e: kube::Error) -> ListError {
    match e {
        kube::Error::Api(status) => {
            let code = status.code;
            let mut text = if code == 0 {
                "the API answered with an error".to_owned()
            } else {
                format!("HTTP {code}")
            };
            let reason = match status.reason.trim() {
                "" | "Failed to parse error data" => match code {
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    404 => "Not Found",
                    500 => "Internal Server Error",
                    503 => "Service Unavailable",
                    _ => "",
                },
                reason => reason,
            };
            if !reason.is_empty() {
                text.push(' ');
                text.push_str(reason);
            }
            let message = first_line(&status.message, 200);
            if !message.is_empty() && !message.starts_with(['{', '[', '<']) {
                text.push_str(": ");
                text.push_str(&message);
            }
            ListError::Api { code, text }
        }
        other => ListError::Other(error_chain(&other)),
    }
}

/// An error and its causes on one line, without the repetitions of nested messages, cut at
/// 400 characters.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = first_line(&err.to_string(), usize::MAX);
        let text = [
            "ServiceError: ",
            "HyperError: ",
            "Failed to infer configuration: ",
        ]
        .iter()
        .fold(text, |t, p| {
            t.strip_prefix(p).map(str::to_owned).unwrap_or(t)
        });
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.retain(|p| !text.contains(p.as_str()));
            parts.push(text);
        }
        next = err.source();
    }
    first_line(&parts.join(": "), 400)
}

/// The first line of `s`, trimmed and cut at `max` characters.
fn first_line(s: &str, max: usize) -> String {
    let line = s.trim().lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A current-thread runtime, created on first use and driven from a helper thread, so that
/// inference works both from plain code and from inside the supervisor's runtime.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn run<F>(&mut self, fut: F) -> Result<F::Output, String>
    where
        F: Future + Send,
        F::Output: Send,
    {
        if self.0.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the Kubernetes client: {e}"))?;
            self.0 = Some(rt);
        }
        let rt = self.0.as_ref().expect("created above");
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .map_err(|_| "the Kubernetes client failed unexpectedly".to_owned())
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this does not.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn kind_priority_and_exact_names() {
        let paths: Vec<String> = [
            "pod/api",
            "rollout/api",
            "statefulset/api",
            "deployment/api-v2",
            "deployment/api",
            "pod/web/container/web",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(find(&paths, "api"), Some("deployment/api"));
        assert_eq!(find(&paths, "web"), Some("pod/web/container/web"));
        assert_eq!(find(&paths, "Api"), None);
        assert_eq!(find(&paths, "ap"), None);
    }

    #[test]
    fn pods_ready_with_sidecars_dropped() {
        let ready = serde_json::json!([{"type": "Ready", "status": "True"}]);
        let one = pod(serde_json::json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "istio-proxy"}, {"name": "app"}]},
            "status": {"conditions": ready},
        }));
        assert_eq!(pod_paths(&one), ["pod/a"]);
        let two = pod(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"containers": [{"name": "x"}, {"name": "linkerd-proxy"}, {"name": "y"}]},
            "status": {"conditions": ready},
        }));
        assert_eq!(pod_paths(&two), ["pod/b/container/x", "pod/b/container/y"]);
        let not_ready = pod(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"containers": [{"name": "x"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        }));
        assert!(pod_paths(&not_ready).is_empty());
        let only_sidecars = pod(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"containers": [{"name": "queue-proxy"}]},
            "status": {"conditions": ready},
        }));
        assert!(pod_paths(&only_sidecars).is_empty());
    }

    #[test]
    fn api_errors_are_one_line_without_json() {
        let status = kube::core::Status::failure(
            "pods is forbidden: User \"x\" cannot list resource \"pods\"\nmore",
            "Forbidden",
        )
        .with_code(403);
        let e = list_error(kube::Error::Api(status.boxed()));
        assert_eq!(
            e.to_string(),
            "HTTP 403 Forbidden: pods is forbidden: User \"x\" cannot list resource \"pods\""
        );
        let raw = kube::core::Status::failure("{\"kind\":\"x\"}", "Failed to parse error data")
            .with_code(500);
        assert_eq!(
            list_error(kube::Error::Api(raw.boxed())).to_string(),
            "HTTP 500 Internal Server Error"
        );
    }
}
