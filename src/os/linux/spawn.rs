//! Spawning a service with glibc's `posix_spawn`: a new session (`POSIX_SPAWN_SETSID`), its
//! working directory, stdin `/dev/null`, output appended to its log, default signal
//! dispositions and an empty signal mask. `posix_spawn` uses `clone(CLONE_VM|CLONE_VFORK)`,
//! so a spawn costs the same whatever the size of the supervisor; std's `Command` falls back
//! to `fork` as soon as a `pre_exec` hook (for `setsid`) is set.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::libc;

/// Everything `posix_spawn` needs, prepared before the call (no allocation in between).
pub struct SpawnPlan<'a> {
    /// The file executed.
    pub program: &'a Path,
    /// What the child sees as `argv[0]`: the name it was asked by (`sleep`, not `/usr/bin/sleep`).
    pub arg0: &'a Path,
    pub args: &'a [String],
    /// `KEY=VALUE` entries of the child's whole environment.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    pub cwd: &'a Path,
    pub stdout: &'a OwnedFd,
    pub stderr: &'a OwnedFd,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// The program as `execve` needs it: a path with a slash is taken as is (relative to the
/// child's working directory, where exec happens); a bare name is looked up in the child's
/// `PATH`.
pub fn resolve(program: &Path, path_var: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_owned());
    }
    let paths = path_var.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    search_path(program, paths).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// The first executable `name` in the directories of `paths`. Answers are remembered for the
/// life of the process (a pass starts a hundred `sleep`s; one search is enough), but a
/// remembered file that is gone is searched for again.
pub fn search_path(name: &Path, paths: &OsStr) -> Option<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static FOUND: Mutex<Option<HashMap<(PathBuf, std::ffi::OsString), PathBuf>>> = Mutex::new(None);
    let key = (name.to_owned(), paths.to_owned());
    if let Some(hit) = FOUND
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .filter(|p| is_executable(p))
    {
        return Some(hit.clone());
    }
    let found = std::env::split_paths(paths)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))?;
    FOUND
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, found.clone());
    Some(found)
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Owns a `posix_spawn_file_actions_t` / `posix_spawnattr_t` pair for one call.
struct Raw {
    actions: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `spawn` before `Raw` was built.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

/// Spawns `plan`; returns the child's PID (a session and group leader).
pub fn spawn(plan: &SpawnPlan<'_>) -> io::Result<i32> {
    let program = cstring(plan.program.as_os_str().as_bytes())?;
    let cwd = cstring(plan.cwd.as_os_str().as_bytes())?;
    let argv_owned: Vec<CString> = std::iter::once(cstring(plan.arg0.as_os_str().as_bytes()))
        .chain(plan.args.iter().map(|a| cstring(a.as_bytes())))
        .collect::<io::Result<_>>()?;
    let envp_owned: Vec<CString> = plan
        .env
        .iter()
        .map(|(k, v)| cstring(&[k.as_slice(), b"=", v.as_slice()].concat()))
        .collect::<io::Result<_>>()?;
    let mut argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> =
        envp_owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let dev_null = c"/dev/null";

    // SAFETY: every pointer handed to libc below points into values owned by this function
    // (or by `plan`) that outlive the `posix_spawn` call; the structures are initialised
    // before use and destroyed by `Raw`'s Drop.
    unsafe {
        let mut raw = Raw {
            actions: std::mem::zeroed(),
            attr: std::mem::zeroed(),
        };
        check(libc::posix_spawn_file_actions_init(&mut raw.actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut raw.attr)) {
            libc::posix_spawn_file_actions_destroy(&mut raw.actions);
            return Err(e);
        }
        check(libc::posix_spawn_file_actions_addopen(
            &mut raw.actions,
            0,
            dev_null.as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &mut raw.actions,
            plan.stdout.as_raw_fd(),
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &mut raw.actions,
            plan.stderr.as_raw_fd(),
            2,
        ))?;
        check(libc::posix_spawn_file_actions_addchdir_np(
            &mut raw.actions,
            cwd.as_ptr(),
        ))?;
        // Dispositions the supervisor changed (SIGPIPE ignored, say) go back to default, and
        // nothing stays blocked.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::posix_spawnattr_setsigdefault(&mut raw.attr, &all))?;
        check(libc::posix_spawnattr_setsigmask(&mut raw.attr, &none))?;
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
        check(libc::posix_spawnattr_setflags(&mut raw.attr, flags))?;
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &raw.actions,
            &raw.attr,
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        Ok(pid)
    }
}
