//! Every visible command's `--help` shows at least one example (`Example:`/`Examples:`), so that
//! nobody has to guess how a subcommand is called.

use clap::CommandFactory;

/// `(path, long help)` of the command and every visible subcommand below it.
fn long_helps(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    out.push((path.to_owned(), cmd.clone().render_long_help().to_string()));
    for sub in cmd.get_subcommands() {
        // clap's own `help` subcommand is a listing, not a command of ours.
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        long_helps(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_visible_command_shows_an_example() {
    let mut root = mirrord_up::cli::Cli::command();
    // Built, so that the helps are the ones users see (global options propagated).
    root.build();
    let mut helps = Vec::new();
    long_helps(&root, "mirrord-up", &mut helps);
    for expected in [
        "mirrord-up ci start",
        "mirrord-up ci ps",
        "mirrord-up completions",
    ] {
        assert!(
            helps.iter().any(|(path, _)| path == expected),
            "the walk missed `{expected}`"
        );
    }
    assert!(
        !helps.iter().any(|(path, _)| path.contains("__supervise")),
        "the walk includes a hidden command"
    );
    let missing: Vec<&str> = helps
        .iter()
        .filter(|(_, help)| !help.contains("Example"))
        .map(|(path, _)| path.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "`--help` shows no example (add an `after_help` with `Examples:` in src/cli.rs) for:\n  {}",
        missing.join("\n  ")
    );
}
