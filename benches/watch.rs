//! Source-watch benchmark (issue #16): latency from a save of a watched file to the new app
//! running, p50, against the floor of a bare inotify-and-spawn loop measured in the same run.
//!
//! ```text
//! cargo bench --bench watch                       # 30 saves each
//! WATCH_SAVES=5 cargo bench --bench watch          # smoke run
//! ```
//!
//! Every app is `sh -c 'echo $$ > <fifo>; exec sleep 100000'`: it announces itself on a FIFO
//! that the bench holds open and reads on a thread (an event, no polling). Per save, the clock
//! starts just before the write of the watched file and stops when the new app's line is read.
//!
//! 1. **Floor**: the bench itself watches the directory (notify/inotify), and on each event
//!    stops the running app's process group (SIGTERM, wait) and spawns the next one: what any
//!    watcher that restarts a process cannot beat.
//! 2. **watch, `action: restart`**: `mirrord-up up -d` (release binary, `--launcher local`,
//!    so the same runner path as under `mirrord exec` once the session is up: supervisor
//!    watch → SIGUSR1 → the runner stops and starts the app), debounce `WATCH_DEBOUNCE_MS`
//!    (default 20).
//! 3. **watch, `action: restart-session`**: the same through the supervisor's normal restart
//!    (a new process group; with mirrord, a new `mirrord exec` and session on top).
//!
//! The debounce is part of the watch latencies (the floor has none); the table shows both.
//! Run as a test (`cargo test --benches`), the saves shrink to 3.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_mirrord-up");
const TIMEOUT: Duration = Duration::from_secs(15);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads `<pid>` lines from the FIFO for the rest of the run.
fn fifo_reader(fifo: &Path) -> Receiver<(Instant, i32)> {
    nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Read-write: writers never block in `open`, the reader never sees end-of-file.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fifo)
        .expect("open fifo");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { return };
            if let Ok(pid) = line.trim().parse::<i32>()
                && tx.send((Instant::now(), pid)).is_err()
            {
                return;
            }
        }
    });
    rx
}

fn app_script(fifo: &Path) -> String {
    format!("echo $$ > '{}'; exec sleep 100000", fifo.display())
}

fn next_app(rx: &Receiver<(Instant, i32)>, what: &str) -> (Instant, i32) {
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{what}: no new app within {TIMEOUT:?}"))
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// 1 -------------------------------------------------------------------------------------------

fn spawn_app(fifo: &Path) -> Child {
    Command::new("sh")
        .args(["-c", &app_script(fifo)])
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn app")
}

fn floor(dir: &Path, fifo: &Path, saves: usize) -> Vec<f64> {
    use notify::Watcher;
    let rx = fifo_reader(fifo);
    let (ev_tx, ev_rx) = channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = ev_tx.send(());
        }
    })
    .expect("watcher");
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .expect("watch");
    let mut child = spawn_app(fifo);
    next_app(&rx, "floor: first app");
    let file = dir.join("main.go");
    let mut out = Vec::new();
    for i in 0..saves {
        let t0 = Instant::now();
        fs::write(&file, i.to_string()).expect("save");
        ev_rx.recv_timeout(TIMEOUT).expect("inotify event");
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let _ = child.wait();
        child = spawn_app(fifo);
        let (t1, _) = next_app(&rx, "floor");
        out.push(ms(t1 - t0));
        // Events of the same save that arrived after the first.
        while ev_rx.try_recv().is_ok() {}
    }
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    out
}

// 2, 3 ------------------------------------------------------------------------------------------

fn mirrord_up(project: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("-f")
        .arg(project.join("mirrord-up.yaml"))
        .arg("--state-dir")
        .arg(state)
        .args(["--launcher", "local", "-k", "bench"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run mirrord-up")
}

fn watched(root: &Path, action: &str, saves: usize, debounce: u64) -> Vec<f64> {
    let project = root.join(format!("p-{action}"));
    let state = root.join(format!("state-{action}"));
    fs::create_dir_all(&project).unwrap();
    let fifo = root.join(format!("{action}.fifo"));
    let rx = fifo_reader(&fifo);
    let cmd = serde_json::to_string(&["sh", "-c", &app_script(&fifo)]).unwrap();
    fs::write(
        project.join("mirrord-up.yaml"),
        format!(
            "services:\n  app:\n    target: none\n    stop_timeout: 5\n    watch: {{paths: [\"*.go\"], debounce: {debounce}ms, action: {action}}}\n    run: {{command: {cmd}}}\n"
        ),
    )
    .unwrap();
    let up = mirrord_up(&project, &state, &["up", "-d"]);
    assert!(up.status.success(), "up -d: {up:?}");
    next_app(&rx, "first app");
    let file = project.join("main.go");
    let mut out = Vec::new();
    for i in 0..saves {
        let t0 = Instant::now();
        fs::write(&file, i.to_string()).expect("save");
        let (t1, _) = next_app(&rx, action);
        out.push(ms(t1 - t0));
    }
    let down = mirrord_up(&project, &state, &["down", "-t", "5"]);
    assert!(down.status.success(), "down: {down:?}");
    out
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let saves = env_num("WATCH_SAVES", if bench_mode { 30 } else { 3 }) as usize;
    let debounce = env_num("WATCH_DEBOUNCE_MS", 20);
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let root: PathBuf = tempfile::Builder::new()
        .prefix("mirrord-up-watch-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let floor_dir = root.join("floor");
    fs::create_dir_all(&floor_dir).unwrap();
    let floor = floor(&floor_dir, &root.join("floor.fifo"), saves);
    let warm = watched(&root, "restart", saves, debounce);
    let cold = watched(&root, "restart-session", saves, debounce);
    let f = p50(floor);
    println!("watch: {saves} saves each, debounce {debounce} ms, binary {BIN}");
    println!("  {:<34} {:>9}", "save → new app running", "p50 (ms)");
    println!("  {:<34} {:>9.1}", "floor: inotify + kill + spawn", f);
    for (name, v) in [
        ("watch, action: restart (runner)", warm),
        ("watch, action: restart-session", cold),
    ] {
        let p = p50(v);
        println!(
            "  {name:<34} {p:>9.1}   ({:.1} without the debounce; {:.1}× the floor)",
            p - debounce as f64,
            p / f.max(0.001)
        );
    }
    let _ = fs::remove_dir_all(&root);
}
