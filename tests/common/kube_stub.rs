//! A stub Kubernetes API server for target inference (runtime spec §4.3): plain HTTP/1.1 on
//! 127.0.0.1, keep-alive, fixed answers keyed by the exact request target (path and query
//! string), 404 for anything else, and a log of every request target. Plus a kubeconfig that
//! points at it (token user), written to its own tempdir.
//!
//! Nothing here sleeps: the server answers as soon as a request has arrived; a "silent" stub
//! accepts connections and never answers (for the time bounds).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// The query string of every inference list call, as kube-rs writes it (after `?&`).
pub const L: &str = "labelSelector=app%21%3Dmirrord%2C%21operator.metalbear.co%2Fowner&limit=500";

pub fn deployments(ns: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments?&{L}")
}
pub fn statefulsets(ns: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/statefulsets?&{L}")
}
pub fn rollouts(ns: &str) -> String {
    format!("/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts?&{L}")
}
pub fn pods(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods?&fieldSelector=status.phase%3DRunning&{L}")
}
/// The four list calls of one namespace, in real `up`'s kind order.
pub fn inference_requests(ns: &str) -> Vec<String> {
    vec![deployments(ns), statefulsets(ns), rollouts(ns), pods(ns)]
}
pub const OPERATOR: &str = "/apis/operator.metalbear.co/v1/mirrordoperators/operator";

/// A list body; `cont` is the `metadata.continue` token of a further page.
pub fn list(items: Value, cont: Option<&str>) -> String {
    match cont {
        Some(c) => json!({"metadata": {"continue": c}, "items": items}).to_string(),
        None => json!({"metadata": {}, "items": items}).to_string(),
    }
}

/// `{"metadata":{"name":…}}` for each name.
pub fn named(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"metadata": {"name": n}}))
            .collect(),
    )
}

/// A Running pod with these containers, Ready or not.
pub fn pod(name: &str, containers: &[&str], ready: bool) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
           "reason": reason, "code": code})
    .to_string()
}

pub struct Stub {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// Answers `routes[target]` (status, JSON body); 404 with an empty body otherwise.
    pub fn start(routes: BTreeMap<String, (u16, String)>) -> Stub {
        Stub::serve(Some(routes))
    }

    /// Accepts connections and reads requests, but never answers.
    pub fn silent() -> Stub {
        Stub::serve(None)
    }

    /// Like `start`, over TLS with the self-signed certificate of `fixtures/kube-stub/` (for
    /// 127.0.0.1; no client trusts it).
    pub fn start_tls(routes: BTreeMap<String, (u16, String)>) -> Stub {
        Stub::serve_with(Some(routes), Some(tls_config()))
    }

    fn serve(routes: Option<BTreeMap<String, (u16, String)>>) -> Stub {
        Stub::serve_with(routes, None)
    }

    fn serve_with(
        routes: Option<BTreeMap<String, (u16, String)>>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let port = listener.local_addr().expect("addr").port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let routes = Arc::new(routes);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (log, routes, tls) = (log2.clone(), routes.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => handle(conn, &log, &routes),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        handle(rustls::StreamOwned::new(session, conn), &log, &routes)
                    }
                });
            }
        });
        Stub { port, log, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Every request target received so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn tls_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kube-stub");
    let cert = CertificateDer::from_pem_file(dir.join("tls.crt")).expect("stub certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).expect("stub key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("stub TLS config");
    Arc::new(config)
}

fn handle(
    mut conn: impl Read + Write,
    log: &Mutex<Vec<String>>,
    routes: &Option<BTreeMap<String, (u16, String)>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (GET: no body).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let target = head
            .lines()
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_owned();
        log.lock().expect("log").push(target.clone());
        let Some(routes) = routes else {
            continue; // silent: never answer
        };
        let (code, body) = routes.get(&target).cloned().unwrap_or((404, String::new()));
        let reason = match code {
            200 => "OK",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        let response = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(response.as_bytes()).is_err() || conn.flush().is_err() {
            return;
        }
    }
}

/// A kubeconfig (`kubeconfig_text`) in its own tempdir.
pub struct KubeConfig {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl KubeConfig {
    pub fn write(server: &str, contexts: &[(&str, Option<&str>)]) -> KubeConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig_text(server, contexts)).expect("write kubeconfig");
        KubeConfig { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The text of a kubeconfig: cluster `stub` at `server`, user `tester` (a token), and the given
/// contexts `(name, namespace)`; the first one is the current context.
pub fn kubeconfig_text(server: &str, contexts: &[(&str, Option<&str>)]) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {}\nclusters:\n- name: stub\n  cluster:\n    server: {server}\nusers:\n- name: tester\n  user:\n    token: stub-token\ncontexts:\n",
        contexts[0].0
    );
    for (name, ns) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: stub\n    user: tester\n"
        ));
        if let Some(ns) = ns {
            text.push_str(&format!("    namespace: {ns}\n"));
        }
    }
    text
}
