//! Platform code, behind plain functions the portable `process` and `readiness` modules call.
//!
//! mirrord-up runs on Linux only. Everything that reads `/proc`, opens pidfds, becomes a
//! child subreaper or spawns with glibc's `posix_spawn` flags lives in `linux.rs`; a port
//! supplies the same functions (ARCHITECTURE.md names what macOS would use: `proc_pidinfo`
//! and `proc_pidfdinfo` for `/proc`, kqueue `EVFILT_PROC` for pidfds, no subreaper).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

pub mod alloc;
pub mod spawn_cache;

#[cfg(not(target_os = "linux"))]
compile_error!("mirrord-up runs on Linux only: src/os/ has no code for this platform");
