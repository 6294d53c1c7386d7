//! What compose users reach for, and the messages that tell them what they meant (issue 12,
//! items 12, 14, 15, 16), driven through the binary:
//!
//! * a Tera error about `git_branch` outside a git checkout suggests `default(value="main")`;
//! * top-level `x-*` keys are ignored, YAML merge keys (`<<: *base`) apply at every level;
//! * `profiles:` keep a service down unless one of its profiles is active (`--profile`,
//!   `MIRRORD_UP_PROFILES`) or it is named;
//! * `check --compat` lists these extensions.

mod common;

use common::*;

#[test]
fn git_branch_outside_git_suggests_a_default() {
    let p = Project::new("nogit");
    p.write_yaml(
        "services:\n  api:\n    target: none\n    env:\n      override:\n        BRANCH: \"{{ git_branch }}\"\n    run: {command: [\"./api\"]}\n",
    );
    let mut cmd = p.command(&["check"]);
    cmd.env_remove("MIRRORD_BRANCH_NAME")
        .env("GIT_CEILING_DIRECTORIES", p.dir.parent().expect("parent"));
    let out = Running::start(cmd, "mirrord-up check".into()).wait();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("Variable `git_branch` not found"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("hint: `git_branch` is only defined inside a git checkout with a branch: write `{{ git_branch | default(value=\"main\") }}`"),
        "{out}"
    );
    // The hint comes last, under the snippet that shows the line.
    let at = out.stderr.find(":6:").expect("position");
    assert!(out.stderr.find("hint:").expect("hint") > at, "{out}");
}

/// The services `ps` shows running (with a PID).
fn running(p: &Project) -> Vec<String> {
    p.pids().into_keys().collect()
}

#[test]
fn profiles_start_a_service_only_when_active_or_named() {
    let mut p = Project::new("profiles");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&yaml(&[
        service("api", SLEEP, &[]),
        service("debugger", SLEEP, &["profiles: [debug, tools]"]),
        service("seeder", SLEEP, &["profiles: [seed]"]),
    ]));
    let plan = p.ok(&["plan"]).stdout;
    assert!(plan.contains("api") && !plan.contains("debugger"), "{plan}");
    // Several profiles through the environment, comma-separated.
    let mut cmd = p.command(&["plan"]);
    cmd.env("MIRRORD_UP_PROFILES", "other,tools");
    let out = Running::start(cmd, "mirrord-up plan".into()).wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.contains("debugger") && !out.stdout.contains("seeder"),
        "{out}"
    );

    p.ok(&["up", "-d"]);
    assert_eq!(running(&p), ["api"]);
    // Named, a service starts whatever its profiles.
    p.ok(&["up", "-d", "seeder"]);
    assert_eq!(running(&p), ["api", "seeder"]);
    // `--profile` after the subcommand, and repeated.
    p.ok(&["up", "-d", "--profile", "nothing", "--profile", "debug"]);
    assert_eq!(running(&p), ["api", "debugger", "seeder"]);
    p.ok(&["down"]);
}

#[test]
fn every_service_behind_an_inactive_profile_says_so() {
    let p = Project::new("allprofiled");
    p.write_yaml(&yaml(&[service("api", SLEEP, &["profiles: [debug]"])]));
    let out = p.run(&["plan"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains("has `profiles` none of which is active (`--profile NAME`)"),
        "{out}"
    );
}

const REUSE: &str = "\
x-common: &common
  target: none
  env:
    override:
      LOG_LEVEL: debug
x-env: &env
  REGION: eu
  ZONE: a
services:
  api:
    <<: *common
    run: {command: [\"sleep\", \"1000\"]}
  worker:
    <<: *common
    env:
      override:
        <<: *env
        ZONE: b
    run: {command: [\"sleep\", \"1000\"]}
";

#[test]
fn x_keys_are_ignored_and_merge_keys_apply_at_every_level() {
    let p = Project::new("reuse");
    p.write_yaml(REUSE);
    let api: serde_json::Value =
        serde_json::from_str(&p.ok(&["config", "api"]).stdout).expect("JSON");
    assert_eq!(api["feature"]["env"]["override"]["LOG_LEVEL"], "debug");
    assert_eq!(api["target"]["path"], serde_json::Value::Null, "{api}");
    // A merge inside `env.override`; the service's own `env` replaces the anchor's (`<<` never
    // overrides a key written in place), and `ZONE` written in place beats the merged one.
    let worker: serde_json::Value =
        serde_json::from_str(&p.ok(&["config", "worker"]).stdout).expect("JSON");
    let env = &worker["feature"]["env"]["override"];
    assert_eq!(env["REGION"], "eu", "{worker}");
    assert_eq!(env["ZONE"], "b", "{worker}");
    assert_eq!(env["LOG_LEVEL"], serde_json::Value::Null, "{worker}");
}

#[test]
fn check_compat_lists_the_compose_extensions() {
    let p = Project::new("compatlist");
    p.write_yaml(&REUSE.replace("  worker:\n", "  worker:\n    profiles: [jobs]\n"));
    let out = p.run(&["check", "--compat"]);
    assert_eq!(out.code, Some(1), "{out}");
    for line in [
        "  x-common",
        "  x-env",
        "  << (YAML merge keys)",
        "  services.worker.profiles",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "no `{line}`: {out}");
    }
    // Without them the file is one real mirrord takes.
    p.write_yaml(&yaml(&[service("api", SLEEP, &[])]));
    let out = p.run(&["check", "--compat"]);
    assert_eq!(out.code, Some(0), "{out}");
}

#[test]
fn config_yaml_prints_the_file_as_parsed() {
    let p = Project::new("asparsed");
    p.write_yaml(&format!(
        "{}  web:\n    <<: *common\n    env: {{override: {{SESSION: \"{{{{ key }}}}\"}}}}\n    run: {{command: [\"./web\"]}}\n",
        REUSE
    ));
    let out = p.ok(&["config", "--yaml"]);
    let parsed: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("YAML");
    // Rendered (the key is `tester`), merged, and without the `x-*` keys.
    assert_eq!(
        parsed["services"]["web"]["env"]["override"]["SESSION"], "tester",
        "{out}"
    );
    assert_eq!(parsed["services"]["api"]["target"], "none", "{out}");
    assert!(parsed.get("x-common").is_none(), "{out}");
    assert!(!out.stdout.contains("<<"), "{out}");
    // What it prints is a file mirrord-up takes as it is, with the same hashes.
    let hashes = p.ok(&["config", "--hash"]).stdout;
    p.write_yaml(&out.stdout);
    assert_eq!(p.ok(&["config", "--hash"]).stdout, hashes);
    let out = p.run(&["config", "--yaml", "--hash"]);
    assert_eq!(out.code, Some(2), "{out}");
}

const BASE: &str = "\
services:
  api:
    target: none
    env:
      override: {A: \"1\", B: \"2\"}
    ignore_ports: [1, 2]
    run: {command: [\"sleep\", \"1000\"]}
  web:
    target: none
    run: {command: [\"sleep\", \"1001\"]}
";

const OVER: &str = "\
services:
  api:
    env:
      override: {B: \"3\"}
    ignore_ports: [9]
    run: {command: [\"sleep\", \"2000\"]}
";

#[test]
fn several_files_merge_in_order_the_compose_way() {
    let p = Project::new("merged");
    p.write_yaml(BASE);
    let over = p.dir.join("override.yaml");
    std::fs::write(&over, OVER).expect("write override");
    let over = over.to_str().expect("UTF-8 path");
    let out = p.ok(&["-f", over, "config", "--yaml"]);
    let v: serde_yaml::Value = serde_yaml::from_str(&out.stdout).expect("YAML");
    let api = &v["services"]["api"];
    // Mappings merge, sequences (`command` as a whole, `ignore_ports`) and scalars replace.
    assert_eq!(api["env"]["override"]["A"], "1", "{out}");
    assert_eq!(api["env"]["override"]["B"], "3", "{out}");
    assert_eq!(api["run"]["command"][1], "2000", "{out}");
    assert_eq!(api["run"]["command"].as_sequence().map(Vec::len), Some(2));
    assert_eq!(api["ignore_ports"].as_sequence().map(Vec::len), Some(1));
    assert_eq!(api["target"], "none", "{out}");
    assert_eq!(v["services"]["web"]["run"]["command"][1], "1001", "{out}");
    // The hash is the merged file's; MIRRORD_UP_FILE holds several paths separated by `:`.
    let merged_hash = p.ok(&["-f", over, "config", "--hash"]).stdout;
    assert_ne!(merged_hash, p.ok(&["config", "--hash"]).stdout);
    let mut cmd = mirrord_up();
    cmd.args(["-k", "tester", "config", "--hash"])
        .env("MIRRORD_UP_FILE", format!("{}:{over}", p.yaml.display()));
    let out = Running::start(cmd, "mirrord-up config --hash".into()).wait();
    assert_eq!(out.stdout, merged_hash, "{out}");
    // `check --compat` names the merge as an extension.
    let out = p.run(&["-f", over, "check", "--compat"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains("-f given 2 times (files merged)"),
        "{out}"
    );
}

#[test]
fn an_error_in_a_merged_file_names_that_file_and_line() {
    let p = Project::new("mergeerr");
    p.write_yaml(BASE);
    let over = p.dir.join("override.yaml");
    // An unknown key, written only in the second file.
    std::fs::write(&over, format!("{OVER}    bogus: 1\n")).expect("write");
    let o = over.to_str().expect("UTF-8 path");
    let out = p.run(&["-f", o, "check"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("unknown field `bogus`"), "{out}");
    assert!(out.stderr.contains(&format!("{o}:2:3")), "{out}");
    // A validation error on a key of the second file.
    std::fs::write(&over, format!("{OVER}    depends_on: [nope]\n")).expect("write");
    let out = p.run(&["-f", o, "check"]);
    assert!(out.stderr.contains("unknown service `nope`"), "{out}");
    assert!(out.stderr.contains(&format!("{o}:7:5")), "{out}");
    // A YAML syntax error in the second file, at its own line.
    std::fs::write(
        &over,
        "services:\n  api:\n    run: {command: [x]}\n   env: {}\n",
    )
    .expect("w");
    let out = p.run(&["-f", o, "check"]);
    assert!(out.stderr.contains(&format!("{o}:4:")), "{out}");
    assert!(out.stderr.contains("indentation"), "{out}");
}

#[test]
fn the_live_loop_watches_every_file() {
    let mut p = Project::new("watchall");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(BASE);
    let over = p.dir.join("override.yaml");
    std::fs::write(&over, OVER).expect("write override");
    let o = over.to_str().expect("UTF-8 path").to_owned();
    p.globals.extend(["-f".into(), o]);
    p.ok(&["up", "-d"]);
    let before = p.pids();
    assert_eq!(before.len(), 2, "{before:?}");
    // An edit of the second file alone restarts the service it changes.
    std::fs::write(&over, OVER.replace("2000", "3000")).expect("edit override");
    wait_until(
        "api restarted after the edit of the second file",
        std::time::Duration::from_secs(20),
        || p.pids().get("api").is_some_and(|pid| *pid != before["api"]),
    );
    assert_eq!(p.pids()["web"], before["web"]);
    // The same files again are applied by the running supervisor; another list is refused.
    p.ok(&["up", "-d"]);
    let mut cmd = mirrord_up();
    cmd.current_dir(&p.dir)
        .arg("-f")
        .arg(&p.yaml)
        .arg("--state-dir")
        .arg(&p.state_root)
        .args(["--launcher", "local", "-k", "tester", "up", "-d"]);
    let out = Running::start(cmd, "mirrord-up up -d (first file only)".into()).wait();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("this project's supervisor merges"),
        "{out}"
    );
    p.ok(&["down"]);
}
