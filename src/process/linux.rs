//! Linux specifics: `/proc` reading (procfs) and the boot id.

use std::collections::HashMap;
use std::sync::OnceLock;

/// What the tool needs of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub pgid: i32,
    pub session: i32,
    pub start_time: u64,
    pub zombie: bool,
}

fn info_of(stat: &procfs::process::Stat) -> ProcInfo {
    ProcInfo {
        pid: stat.pid,
        pgid: stat.pgrp,
        session: stat.session,
        start_time: stat.starttime,
        zombie: matches!(stat.state, 'Z' | 'X'),
    }
}

pub fn proc_info(pid: i32) -> std::io::Result<ProcInfo> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(info_of(&stat))
}

/// Every process visible in `/proc`.
pub fn scan() -> Vec<ProcInfo> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok()?.stat().ok().map(|s| info_of(&s)))
        .collect()
}

/// The environment of a process we may read (our own user's), or `None`.
pub fn environ_of(pid: i32) -> Option<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let s = std::str::from_utf8(kv).ok()?;
                let (k, v) = s.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect(),
    )
}

pub fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}
