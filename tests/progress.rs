//! What `up --detach` and `down` show on stderr (the real binary, real processes,
//! `--launcher local`): on a terminal, the live display (one line per service, a spinner and
//! the time waited against the limit while it waits, kept with ✔ or ✖ once it is done, the
//! summary printed below it); through a pipe, or on a terminal with `NO_COLOR`, `--no-color`,
//! `TERM=dumb` or no `TERM`, the plain lines and not one escape code; with `-q`, nothing. And
//! `--no-color` reaches clap's own coloured usage errors too.
//!
//! A terminal's final state is read with `common::pty::screen`, so a display that leaves a
//! spinner behind or draws over what follows it fails, not only one that is missing.

mod common;

use std::process::Command;

use common::pty;
use common::{Out, Project, Running, SLEEP, service, yaml};
use regex::Regex;

/// Takes a second to stop after SIGTERM, so its `stopping` line is on the screen meanwhile.
const SLOW_STOP: &[&str] = &[
    "sh",
    "-c",
    "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.1; done",
];

const STARTED: &str = "2 started, 0 restarted, 0 stopped, 0 unchanged";

/// `slow` (5 s grace period) and `web`, run without mirrord.
fn project(name: &str) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service("slow", SLOW_STOP, &["stop_timeout: 5"]),
        service("web", SLEEP, &[]),
    ]));
    p
}

fn through_pipes(cmd: Command, what: &str) -> Out {
    Running::start(cmd, what.to_owned()).wait()
}

/// What a variant changes of the command.
type Tweak = fn(&mut Command);

/// A plain `started` line of `project`'s services.
fn plain_started() -> Regex {
    Regex::new(r"^(slow |web  ) started \(pid \d+\): new service$").unwrap()
}

/// The screen's rows, sorted: services reach their outcome in an order of their own.
fn sorted(rows: &[String]) -> Vec<String> {
    let mut rows = rows.to_vec();
    rows.sort();
    rows
}

#[test]
fn on_a_terminal_each_service_has_a_live_line_kept_with_its_outcome() {
    let p = project("live");

    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["up", "--detach"]));
    let shown = pty::screen(&raw);
    assert_eq!(code, Some(0), "{shown:#?}");
    assert!(
        raw.windows(2).any(|w| w == b"\x1b["),
        "no escape sequence on a terminal: {shown:#?}"
    );
    assert_eq!(shown.len(), 3, "{shown:#?}");
    let started = Regex::new(r"^(slow |web  ) ✔ started \(pid \d+\): new service$").unwrap();
    let services = sorted(&shown[..2]);
    assert!(services[0].starts_with("slow  ✔"), "{shown:#?}");
    assert!(services[1].starts_with("web   ✔"), "{shown:#?}");
    assert!(services.iter().all(|l| started.is_match(l)), "{shown:#?}");
    // The summary goes below the finished display, on a line of its own.
    assert_eq!(shown[2], STARTED, "{shown:#?}");

    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["down"]));
    let shown = pty::screen(&raw);
    assert_eq!(code, Some(0), "{shown:#?}");
    // While `slow` spends its second in the grace period: a spinner and the time waited.
    let text = pty::visible(&raw);
    let waiting = Regex::new(r"slow  [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] stopping \(\d+\.\d s / 5 s\)").unwrap();
    assert!(
        waiting.is_match(&text),
        "no live `stopping` line in:\n{text}"
    );
    // Each outcome took the place of its wait: `web` stopped first (the plain lines put it
    // first), but its line stays below the one of `slow`, whose wait began first.
    assert_eq!(
        shown,
        [
            "slow  ✔ stopped: down requested",
            "web   ✔ stopped: down requested"
        ],
        "{shown:#?}"
    );
}

#[test]
fn on_a_terminal_a_failure_has_a_cross_and_the_error_follows_the_display() {
    let p = project("cross");
    p.write_yaml(&yaml(&[
        service("bad", &["./missing"], &[]),
        service("web", SLEEP, &[]),
    ]));

    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["up", "--detach"]));
    let shown = pty::screen(&raw);
    assert_eq!(code, Some(1), "{shown:#?}");
    assert_eq!(shown.len(), 3, "{shown:#?}");
    let services = sorted(&shown[..2]);
    assert!(
        services[0].starts_with("bad  ✖ failed: command `./missing` not found"),
        "{shown:#?}"
    );
    assert!(
        services[1].starts_with("web  ✔ started (pid "),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("error: bad failed to start: command `./missing` not found"),
        "{shown:#?}"
    );
}

#[test]
fn on_a_terminal_a_wait_that_never_ends_is_erased_before_the_error() {
    let p = project("abandoned");
    // Exits after a second without ever printing what its readiness check looks for.
    p.write_yaml(&yaml(&[service(
        "db",
        &["sh", "-c", "sleep 1; exit 3"],
        &["ready: {log: never}"],
    )]));

    let (code, raw) = common::pty::on_terminal(common::as_user(
        &p,
        &["up", "--detach", "--wait", "--wait-timeout", "30"],
    ));
    let shown = pty::screen(&raw);
    assert_eq!(code, Some(1), "{shown:#?}");
    let text = pty::visible(&raw);
    assert!(
        text.contains("waiting for readiness (") && text.contains(" / 30 s)"),
        "no live readiness line in:\n{text}"
    );
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert!(
        Regex::new(r"^db  ✔ started \(pid \d+\): new service$")
            .unwrap()
            .is_match(&shown[0]),
        "{shown:#?}"
    );
    assert_eq!(
        shown[1], "error: db failed to start: db exited before it was ready",
        "{shown:#?}"
    );
}

#[test]
fn through_a_pipe_the_lines_are_plain_without_escape_codes() {
    let p = project("piped");
    let no_escape = |out: &Out| {
        assert!(
            !out.stdout.contains('\x1b') && !out.stderr.contains('\x1b'),
            "an escape code went to a pipe: {out:?}"
        );
    };

    let up = through_pipes(common::as_user(&p, &["up", "--detach"]), "up --detach");
    assert_eq!(up.code, Some(0), "{up}");
    no_escape(&up);
    let started = plain_started();
    let lines: Vec<String> = up.stderr.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{up}");
    assert!(lines.iter().all(|l| started.is_match(l)), "{up}");
    assert_eq!(up.stdout, format!("{STARTED}\n"), "{up}");

    let down = through_pipes(common::as_user(&p, &["down"]), "down");
    assert_eq!(down.code, Some(0), "{down}");
    no_escape(&down);
    // `web` is gone while `slow` is still in its grace period.
    assert_eq!(
        down.stderr, "web   stopped: down requested\nslow  stopped: down requested\n",
        "{down}"
    );

    // The error label is not coloured either.
    p.write_yaml(&yaml(&[service("bad", &["./missing"], &[])]));
    let failed = through_pipes(common::as_user(&p, &["up", "--detach"]), "up --detach");
    assert_eq!(failed.code, Some(1), "{failed}");
    no_escape(&failed);
    assert!(
        failed
            .stderr
            .starts_with("bad  failed: command `./missing` not found"),
        "{failed}"
    );
    assert!(
        failed.stderr.contains("\nerror: bad failed to start"),
        "{failed}"
    );
}

#[test]
fn on_a_terminal_without_colours_the_lines_are_plain_and_quiet_shows_nothing() {
    let p = project("plain");
    // The baseline: a capable terminal gets a coloured error label.
    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["restart", "nosuch"]));
    assert_eq!(code, Some(1));
    assert!(
        raw.starts_with(b"\x1b[31merror:\x1b[0m "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    let variants: [(&str, Tweak); 5] = [
        ("NO_COLOR=1", |c| {
            c.env("NO_COLOR", "1");
        }),
        ("--no-color", |c| {
            c.arg("--no-color");
        }),
        ("TERM=dumb", |c| {
            c.env("TERM", "dumb");
        }),
        // A terminal of unknown kind is taken as a dumb one.
        ("no TERM", |c| {
            c.env_remove("TERM");
        }),
        ("-q", |c| {
            c.arg("-q");
        }),
    ];
    let started = plain_started();
    for (what, tweak) in variants {
        let mut up = common::as_user(&p, &["up", "--detach"]);
        tweak(&mut up);
        let (code, raw) = common::pty::on_terminal(up);
        let shown = pty::screen(&raw);
        assert_eq!(code, Some(0), "{what}: {shown:#?}");
        assert!(
            !raw.contains(&b'\x1b'),
            "{what}: an escape code: {:?}",
            String::from_utf8_lossy(&raw)
        );

        let mut down = common::as_user(&p, &["down"]);
        tweak(&mut down);
        let (code, raw_down) = common::pty::on_terminal(down);
        let shown_down = pty::screen(&raw_down);
        assert_eq!(code, Some(0), "{what}: {shown_down:#?}");
        assert!(
            !raw_down.contains(&b'\x1b'),
            "{what}: an escape code: {:?}",
            String::from_utf8_lossy(&raw_down)
        );

        // Errors are printed whatever the variant; only `-q` leaves colours on.
        let mut failing = common::as_user(&p, &["restart", "nosuch"]);
        tweak(&mut failing);
        let (code, raw_error) = common::pty::on_terminal(failing);
        let error = pty::visible(&raw_error);
        assert_eq!(code, Some(1), "{what}: {error}");
        assert!(error.starts_with("error: "), "{what}: {error:?}");
        assert_eq!(
            raw_error.contains(&b'\x1b'),
            what == "-q",
            "{what}: {:?}",
            String::from_utf8_lossy(&raw_error)
        );

        if what == "-q" {
            assert!(raw.is_empty(), "{what}: {shown:#?}");
            assert!(raw_down.is_empty(), "{what}: {shown_down:#?}");
            continue;
        }
        assert_eq!(shown.len(), 3, "{what}: {shown:#?}");
        assert!(
            shown[..2].iter().all(|l| started.is_match(l)),
            "{what}: {shown:#?}"
        );
        assert_eq!(shown[2], STARTED, "{what}: {shown:#?}");
        assert_eq!(
            shown_down,
            [
                "web   stopped: down requested",
                "slow  stopped: down requested"
            ],
            "{what}: {shown_down:#?}"
        );
    }
}

#[test]
fn no_color_also_reaches_the_usage_errors_of_the_command_line() {
    let p = Project::new("usage");
    let (code, raw) = common::pty::on_terminal(common::as_user(&p, &["up", "--bogus"]));
    assert_eq!(code, Some(2));
    // On a terminal the usage error is coloured (so this test can see the difference)...
    assert!(
        raw.contains(&b'\x1b'),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // ...and not once `--no-color` is given, wherever it stands.
    for args in [
        ["--no-color", "up", "--bogus"],
        ["up", "--bogus", "--no-color"],
    ] {
        let (code, raw) = common::pty::on_terminal(common::as_user(&p, &args));
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(code, Some(2), "{text}");
        assert!(text.contains("unexpected argument '--bogus'"), "{text}");
        assert!(!raw.contains(&b'\x1b'), "{args:?}: {text:?}");
    }
}
