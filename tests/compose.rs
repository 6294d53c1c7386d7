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
