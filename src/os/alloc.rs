//! The one setting of the allocator (mimalloc, `src/main.rs`) that depends on what the
//! process does: whether memory it frees is given back to the system.
//!
//! mimalloc gives freed memory back a while after it was freed (its purge delay, 1 s), one
//! `madvise(MADV_DONTNEED)` per 64 KiB page, on the next allocation after the delay, and all
//! of it when the process exits. A process that is about to end gains nothing from that:
//! traced, a supervisor's `down` of 500 services spent 2.5–3 ms before its first signal
//! giving back what its previous pass had freed (128 `madvise` calls, and the pass then faulted
//! the same pages in again), and 0.4–1.2 ms between its last thread's end and its exit doing
//! it once more. A command that answers and ends (`ps`, `down`, `up -d`'s client), and a
//! supervisor once its final pass begins, keep what they free ([`keep_freed_memory`]).

// The allocator's own crate: its C library holds the functions below.
use mimalloc as _;

/// `mi_option_purge_delay` of `mimalloc.h`: its place in `mi_option_t` (the same in mimalloc
/// 2 and 3); a test checks that the option there has the purge delay's default.
const PURGE_DELAY: std::ffi::c_int = 15;

/// `mi_option_destroy_on_exit` of `mimalloc.h` (mimalloc 3); a test checks its place by the
/// defaults of the options around it.
const DESTROY_ON_EXIT: std::ffi::c_int = 22;

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// From now on, this process keeps what it frees for its own later use (no purge: a delay of
/// -1); the kernel takes it all back when the process ends.
pub fn keep_freed_memory() {
    // SAFETY: mimalloc's options are atomics, read and written from any thread; -1 is the
    // documented "never purge" value of this option.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}

/// At the process's exit, mimalloc's own exit hook (`mi_process_done`) is skipped: it collects
/// every heap by force and gives the free memory back to the system (`madvise` of each free
/// range) right before the kernel takes all of it back anyway — a third of the CPU of a
/// `mirrord-up --version` in a profile, and work in every command's and the supervisor's end,
/// which `down` waits for. A value of this option above 1 is the hook's documented way out
/// (`_mi_auto_process_done`); nothing is destroyed, the memory stays mapped until the exit.
pub fn skip_collect_at_exit() {
    // SAFETY: as in `keep_freed_memory`; the option is read only by the exit hook.
    unsafe { mi_option_set(DESTROY_ON_EXIT, 2) }
}

/// The purge delay in force, in milliseconds (-1: never).
#[cfg(test)]
fn purge_delay() -> std::ffi::c_long {
    // SAFETY: as above.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at `DESTROY_ON_EXIT` is `destroy_on_exit`: off by default, between
    /// `deprecated_max_segment_reclaim` (10) and `arena_reserve` (1 GiB, in KiB), with `os_tag`
    /// (100) four places before it.
    #[test]
    fn the_exit_hook_option_is_destroy_on_exit() {
        // SAFETY: as in `purge_delay`: mimalloc's options are atomics, read from any thread.
        let get = |o| unsafe { mi_option_get(o) };
        assert_eq!(get(DESTROY_ON_EXIT - 4), 100, "os_tag");
        assert_eq!(
            get(DESTROY_ON_EXIT - 1),
            10,
            "deprecated_max_segment_reclaim"
        );
        assert_eq!(get(DESTROY_ON_EXIT + 1), 1024 * 1024, "arena_reserve");
        assert!(matches!(get(DESTROY_ON_EXIT), 0 | 2), "destroy_on_exit");
        skip_collect_at_exit();
        assert_eq!(get(DESTROY_ON_EXIT), 2);
    }

    /// The option at `PURGE_DELAY` is the purge delay: it starts at that option's documented
    /// default (1000 ms in mimalloc 3; its neighbours start at 0), and after
    /// `keep_freed_memory` it is -1. No other test touches it.
    #[test]
    fn the_purge_delay_is_the_option_set() {
        assert_eq!(purge_delay(), 1000, "mimalloc's default purge delay");
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
