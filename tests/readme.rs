//! README.md opens as a new user needs it: what the tool does, the two fresh-machine commands
//! (the demo and the tests, the latter being what `.ci/run` calls), a complete example file that
//! the binary accepts, and the commands of a day, each of which the binary knows.

mod common;

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The fenced blocks of `text` with their info string, in order.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push((info.to_owned(), body.join("\n")));
    }
    out
}

#[test]
fn the_first_block_is_the_demo_and_the_test_command_ci_runs() {
    let text = readme();
    let (info, first) = &blocks(&text)[0];
    assert_eq!(info, "sh");
    let commands: Vec<&str> = first
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands,
        ["bash fixtures/demo/run.sh", "cargo test --locked"],
        "{first}"
    );
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect(".ci/run");
    assert!(ci.contains("\ncargo test --locked\n"), ".ci/run: {ci}");
    // What the tool does comes first, in two sentences, before any command.
    let intro = &text[..text.find("```").expect("a block")];
    assert!(
        intro.contains("mirrord") && intro.contains("docker compose"),
        "{intro}"
    );
}

#[test]
fn the_example_file_is_accepted_and_the_days_commands_exist() {
    let text = readme();
    let all = blocks(&text);
    let (_, yaml) = all
        .iter()
        .find(|(info, _)| info == "yaml")
        .expect("an example mirrord-up.yaml");
    let lines = yaml.lines().count();
    assert!(lines <= 12, "the example is {lines} lines long");
    let p = common::Project::new("readme");
    p.write_yaml(yaml);
    let out = p.run(&["check"]);
    assert_eq!(out.code, Some(0), "{out}");

    // The block after the example: `up -d`, an edit, `ps`, `logs -f`, `down`.
    let day = all
        .iter()
        .skip_while(|(info, _)| info != "yaml")
        .nth(1)
        .map(|(_, body)| body.clone())
        .expect("the commands of a day");
    let words: Vec<&str> = day
        .lines()
        .filter_map(|l| l.strip_prefix("mirrord-up "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(words, ["up", "ps", "logs", "down"], "{day}");
    assert!(day.contains("$EDITOR mirrord-up.yaml"), "{day}");
    for word in words {
        let out = p.run(&[word, "--help"]);
        assert_eq!(out.code, Some(0), "`{word} --help`: {out}");
    }
    // Services write to files, not a terminal: the line about unbuffered output.
    assert!(text.contains("`-u`") && text.contains("PYTHONUNBUFFERED"));
}
