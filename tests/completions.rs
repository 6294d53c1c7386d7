//! `mirrord-up completions <SHELL>`: the registration of clap_complete's dynamic completion.
//! The bash script loads in a real bash and its completion function (calling the binary back)
//! offers subcommands and their options, never hidden subcommands, and the service names of
//! the file found as every command finds it (the current directory, else a parent; `-f` on the
//! line wins); the other shells' scripts are generated (and syntax-checked where the shell is
//! installed).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use assert_cmd::Command as Cmd;
use clap::CommandFactory;

fn completions(shell: &str) -> String {
    let out = Cmd::new(env!("CARGO_BIN_EXE_mirrord-up"))
        .args(["completions", shell])
        .output()
        .expect("run mirrord-up completions");
    assert!(
        out.status.success(),
        "`completions {shell}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 script")
}

/// Names of hidden subcommands at any depth (`__supervise`).
fn hidden_subcommands() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() {
                out.push(sub.get_name().to_owned());
            }
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&mirrord_up::cli::Cli::command(), &mut out);
    out
}

fn run_bash(script: &Path, body: &str) -> Output {
    run_bash_in(script, body, Path::new("."))
}

fn run_bash_in(script: &Path, body: &str, dir: &Path) -> Output {
    Command::new("bash")
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!("source '{}' || exit 1\n{body}", script.display()))
        .current_dir(dir)
        .env_remove("MIRRORD_UP_FILE")
        .env_remove("COMPLETE")
        .output()
        .expect("bash is installed (it is required for this test)")
}

/// The words the registered completion function offers for `line` (completing its last word,
/// which may be empty), as bash itself would call it.
fn bash_complete(script: &Path, line: &str) -> Vec<String> {
    bash_complete_in(script, line, Path::new("."))
}

/// As `bash_complete`, with bash (and so the binary it calls back) in `dir`.
fn bash_complete_in(script: &Path, line: &str, dir: &Path) -> Vec<String> {
    let mut words: Vec<&str> = line.split(' ').collect();
    if words.len() < 2 {
        words.push("");
    }
    let cword = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let body = format!(
        r#"spec=$(complete -p mirrord-up) || exit 2
fn=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$fn" ] || {{ echo "no -F function in: $spec" >&2; exit 3; }}
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
"$fn" mirrord-up "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" "),
    );
    let out = run_bash_in(script, &body, dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "completing `{line}` failed: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_script_loads_and_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("mirrord-up.bash");
    std::fs::write(&script, completions("bash")).expect("write script");

    let out = run_bash(&script, "");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sourcing the bash script: exit {:?}, stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );

    let words = bash_complete(&script, "mirrord-up u");
    assert!(
        words.contains(&"up".to_owned()),
        "`mirrord-up u`: {words:?}"
    );

    let hidden = hidden_subcommands();
    assert!(!hidden.is_empty(), "no hidden subcommand left to check");
    for line in ["mirrord-up ", "mirrord-up _"] {
        let words = bash_complete(&script, line);
        for name in &hidden {
            assert!(
                !words.contains(name),
                "`{line}` offers hidden `{name}`: {words:?}"
            );
        }
    }
    let all = bash_complete(&script, "mirrord-up ");
    for sub in ["up", "down", "ps", "ci", "schema", "completions"] {
        assert!(
            all.contains(&sub.to_owned()),
            "`mirrord-up `: no `{sub}` in {all:?}"
        );
    }

    // Past the subcommand too (clap_complete's hyphenated-binary bug, worked around).
    let words = bash_complete(&script, "mirrord-up up --det");
    assert_eq!(words, ["--detach"], "`mirrord-up up --det`");
    let words = bash_complete(&script, "mirrord-up ci st");
    assert_eq!(words, ["start", "stop"], "`mirrord-up ci st`");
}

#[test]
fn every_shell_gets_a_registration_calling_the_binary_back() {
    let hidden = hidden_subcommands();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = completions(shell);
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        assert!(
            script.contains(env!("CARGO_BIN_EXE_mirrord-up")),
            "{shell}: does not call this binary back:\n{script}"
        );
        assert!(
            script.contains("COMPLETE"),
            "{shell}: does not set COMPLETE:\n{script}"
        );
        for name in &hidden {
            assert!(
                !script.contains(name.as_str()),
                "{shell}: mentions hidden `{name}`"
            );
        }
    }
    // `COMPLETE=bash mirrord-up` (clap's own spelling) registers the same way.
    let out = Cmd::new(env!("CARGO_BIN_EXE_mirrord-up"))
        .env("COMPLETE", "bash")
        .output()
        .expect("run mirrord-up");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), completions("bash"));
}

const YAML: &str = "services:\n  api:\n    target: none\n    run:\n      command: [\"true\"]\n  worker:\n    target: none\n    run:\n      command: [\"true\"]\n  db:\n    target: none\n    run:\n      command: [\"true\"]\n";

/// The non-option words, sorted (an empty word is offered the options too).
fn names(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().filter(|w| !w.starts_with('-')).collect();
    v.sort();
    v
}

#[test]
fn service_names_complete_from_the_file_here_or_above() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("mirrord-up.bash");
    std::fs::write(&script, completions("bash")).expect("write script");
    let project = dir.path().join("shop");
    let deep = project.join("src/deep");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(project.join("mirrord-up.yaml"), YAML).unwrap();
    std::fs::write(
        project.join("other.yaml"),
        "services:\n  solo:\n    target: none\n    run:\n      command: [\"true\"]\n",
    )
    .unwrap();

    for cwd in [&project, &deep] {
        for sub in ["restart", "stop", "start", "up", "logs", "config", "plan"] {
            let words = bash_complete_in(&script, &format!("mirrord-up {sub} "), cwd);
            assert_eq!(
                names(words),
                ["api", "db", "worker"],
                "`mirrord-up {sub} <TAB>` in {}",
                cwd.display()
            );
        }
        let words = bash_complete_in(&script, "mirrord-up restart w", cwd);
        assert_eq!(words, ["worker"], "`mirrord-up restart w<TAB>`");
        // Already named ones are offered again (clap_complete's choice); options still work.
        let words = bash_complete_in(&script, "mirrord-up restart --ti", cwd);
        assert_eq!(words, ["--timeout"]);
        // `logs -f` is follow, not a file.
        let words = bash_complete_in(&script, "mirrord-up logs -f a", cwd);
        assert_eq!(words, ["api"], "`mirrord-up logs -f a<TAB>`");
    }
    // A file named on the line wins over the one found.
    let words = bash_complete_in(&script, "mirrord-up -f other.yaml restart ", &project);
    assert_eq!(names(words), ["solo"]);
    // No file anywhere: no names, and no error.
    let words = bash_complete_in(&script, "mirrord-up restart ", dir.path());
    assert!(
        names(words.clone()).is_empty(),
        "names without a file: {words:?}"
    );
}

/// Syntax checks by the shells themselves, for those installed here (bash always is, above).
#[test]
fn scripts_parse_in_installed_shells() {
    let dir = tempfile::tempdir().expect("tempdir");
    let checks: [(&str, &str, &[&str]); 2] =
        [("zsh", "zsh", &["-n"]), ("fish", "fish", &["--no-execute"])];
    for (shell, program, flags) in checks {
        let installed = Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            eprintln!(
                "note: `{program}` is not installed: the {shell} script was not syntax-checked"
            );
            continue;
        }
        let script = dir.path().join(format!("mirrord-up.{shell}"));
        std::fs::write(&script, completions(shell)).expect("write script");
        let out = Command::new(program)
            .args(flags)
            .arg(&script)
            .output()
            .expect("run shell");
        assert!(
            out.status.success(),
            "{shell} rejects the script:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a user sees: an interactive bash on a terminal, the script sourced, TAB pressed.
#[test]
fn tab_in_an_interactive_bash_completes_service_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("mirrord-up.bash");
    std::fs::write(&script, completions("bash")).expect("write script");
    let project = dir.path().join("shop");
    let deep = project.join("src");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(project.join("mirrord-up.yaml"), YAML).unwrap();

    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-i"])
        .current_dir(&deep)
        .env("PS1", "ready> ")
        .env("HOME", dir.path())
        .env_remove("COMPLETE")
        .env_remove("MIRRORD_UP_FILE");
    let mut s = common::pty::Session::start(bash, common::pty::ALL_TTY);
    s.expect("ready> ");
    s.send(&format!("source '{}'\n", script.display()));
    s.expect("ready> ");
    // One candidate: the word is completed in place.
    s.send("mirrord-up restart w\t");
    s.expect("mirrord-up restart worker ");
    // Several: the second TAB lists them.
    s.send("\x15mirrord-up stop \t\t");
    s.expect("--help");
    s.send("\x15exit\n");
    let (status, transcript) = s.finish();
    assert!(status.success(), "bash exited with {status:?}");
    let listing = transcript
        .split("mirrord-up stop")
        .nth(1)
        .expect("the second command line");
    for name in ["api", "db", "worker"] {
        assert!(
            listing.split_whitespace().any(|w| w == name),
            "no `{name}` listed:\n{listing}"
        );
    }
}
