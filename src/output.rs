//! Terminal output: colour decisions and the per-service prefix of compose-style logs.

use std::io::IsTerminal;

/// Colour only on a terminal, and never with `--no-color` or `NO_COLOR`. `TERM=dumb` declares
/// a terminal that shows escape sequences as text (Emacs shell buffers, some CI consoles), and
/// one without `TERM` is taken as such, as clap and indicatif do.
pub fn use_color(no_color_flag: bool, stream_is_tty: bool) -> bool {
    !no_color_flag
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb")
        && stream_is_tty
}

pub fn stdout_color(no_color_flag: bool) -> bool {
    use_color(no_color_flag, std::io::stdout().is_terminal())
}

const PALETTE: &[u8] = &[36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/// A stable colour per service name (same name, same colour, every run).
pub fn color_of(name: &str) -> u8 {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

/// `name | ` padded to `width`, coloured when asked.
pub fn prefix(name: &str, width: usize, color: bool) -> String {
    if color {
        format!("\x1b[{}m{name:<width$} |\x1b[0m ", color_of(name))
    } else {
        format!("{name:<width$} | ")
    }
}

pub fn paint(text: &str, code: u8, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}
