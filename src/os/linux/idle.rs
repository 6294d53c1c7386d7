//! What an idle supervisor gives back: the pages of its own executable it has mapped.
//!
//! A page of machine code stays in the supervisor's resident set from the first time it ran
//! until the process ends (and the kernel maps 16 neighbouring pages with each fault), so an
//! idle supervisor carries every page its start-up, its first pass and its reloads ever
//! touched — most of its RSS at 100 services. These pages are clean copies of the executable
//! file: dropping them from our page tables (`MADV_DONTNEED`) frees nothing the file cannot
//! give back, and the next event maps again, from the page cache, what it runs (minor faults).
//!
//! Only mappings that are never written are dropped: the executable code (`r-xp`) and the
//! read-only segment at the start of the file (`r--p`, file offset 0: constants, unwind
//! tables). The segment that holds relocated data (RELRO, `r--p` at a later offset) and the
//! writable data are never touched: their pages differ from the file.

use std::sync::OnceLock;

/// One mapping of the executable: start address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub len: usize,
}

/// The mappings of our executable that are copies of its file, found once.
fn own_clean_mappings() -> &'static [Mapping] {
    static FOUND: OnceLock<Vec<Mapping>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let here = own_clean_mappings as fn() -> &'static [Mapping] as usize;
        std::fs::read_to_string("/proc/self/maps")
            .map(|maps| clean_mappings_of(&maps, here))
            .unwrap_or_default()
    })
}

/// Parses `/proc/self/maps`: the mappings of the file whose `r-xp` mapping holds `code` —
/// that one, and the file's `r--p` mapping at offset 0. Nothing when `code` is in no such
/// mapping (an anonymous or writable one: then we do not know what we would drop).
pub fn clean_mappings_of(maps: &str, code: usize) -> Vec<Mapping> {
    let lines: Vec<Line> = maps.lines().filter_map(parse_line).collect();
    let Some(text) = lines
        .iter()
        .find(|l| l.start <= code && code < l.end && l.perms == "r-xp" && l.file.1 != 0)
    else {
        return Vec::new();
    };
    lines
        .iter()
        .filter(|l| l.file == text.file && l.end > l.start)
        .filter(|l| l.perms == "r-xp" || (l.perms == "r--p" && l.offset == 0))
        .map(|l| Mapping {
            start: l.start,
            len: l.end - l.start,
        })
        .collect()
}

/// One line of `/proc/<pid>/maps`.
struct Line<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    offset: u64,
    /// Device and inode (0: anonymous).
    file: (&'a str, u64),
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let mut f = line.split_ascii_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let offset = u64::from_str_radix(f.next()?, 16).ok()?;
    let dev = f.next()?;
    let inode: u64 = f.next()?.parse().ok()?;
    Some(Line {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        file: (dev, inode),
    })
}

/// Gives back what an idle supervisor does not need resident: freed heap (`malloc_trim`)
/// and the pages of its executable (above). Called once the loop has been idle a while.
pub fn release_idle_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    for m in own_clean_mappings() {
        // SAFETY: each range is a whole private, read-only mapping of our executable file
        // (found above), never written: dropping its pages makes the next access read the
        // same bytes from the file. Code running on another thread just faults them back.
        unsafe {
            nix::libc::madvise(m.start as *mut _, m.len, nix::libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00200000-0052f000 r--p 00000000 fd:00 1234 /x/mirrord-up
00530000-0107c000 r-xp 0032f000 fd:00 1234 /x/mirrord-up
0107c000-0121b000 r--p 00e7a000 fd:00 1234 /x/mirrord-up
0121b000-0121e000 rw-p 01018000 fd:00 1234 /x/mirrord-up
7f0000000000-7f0000028000 r--p 00000000 fd:00 99 /usr/lib/libc.so.6
7f0000028000-7f00001bd000 r-xp 00028000 fd:00 99 /usr/lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn only_the_code_and_the_first_read_only_segment_of_our_file_are_dropped() {
        let got = clean_mappings_of(MAPS, 0x600000);
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x200000,
                    len: 0x32f000
                },
                Mapping {
                    start: 0x530000,
                    len: 0xb4c000
                },
            ]
        );
        // Code of another file (libc) names libc's mappings, never ours.
        let libc = clean_mappings_of(MAPS, 0x7f0000030000);
        assert!(libc.iter().all(|m| m.start >= 0x7f0000000000));
        // An address in no executable mapping (the stack, RELRO): nothing.
        assert!(clean_mappings_of(MAPS, 0x7ffd00000010).is_empty());
        assert!(clean_mappings_of(MAPS, 0x1080000).is_empty());
        assert!(clean_mappings_of("garbage\n\n1-2 r-xp zz", 1).is_empty());
    }

    #[test]
    fn released_code_runs_again_and_the_resident_set_shrinks() {
        let mappings = own_clean_mappings();
        assert!(!mappings.is_empty(), "our own code mapping is found");
        let resident = || {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
                .unwrap()
        };
        let before = resident();
        release_idle_memory();
        let after = resident();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // The code dropped above runs again (it is faulted back from the file).
        assert_eq!(clean_mappings_of(MAPS, 0x600000).len(), 2);
        release_idle_memory();
    }
}
