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
