use std::process::ExitCode;

/// mimalloc instead of the C library's allocator: a pass allocates and frees thousands of small
/// values (records, names, plans), and glibc spent a fifth of the supervisor's time on a save in
/// `malloc`/`free` and in consolidating its freed chunks. Built without transparent huge pages
/// (`no_thp`), which would grow the idle supervisor's memory in 2 MiB steps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mirrord_up::os::alloc::skip_collect_at_exit();
    mirrord_up::commands::main()
}
