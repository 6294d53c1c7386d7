//! Helpers shared by the benches: knobs from the environment, reaping, service names.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A non-negative integer knob from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

/// Reaps every child that has exited (the benches are subreapers of what they start).
pub fn reap_any() {
    while let Ok(ws) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if ws == WaitStatus::StillAlive {
            break;
        }
    }
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:03}")
}

/// A comma-separated list of positive sizes from the environment (`100,500`), or `default`.
#[allow(dead_code)] // not every bench takes a list
pub fn env_list(name: &str, default: Vec<usize>) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a list of sizes like 100,500"))
            })
            .collect(),
        Err(_) => default,
    }
}
