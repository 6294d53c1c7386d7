//! `ls`: every project of the state directory with its file, its supervisor and its services
//! counted by status, as a table and as JSON; a project `down` emptied only with `-a`; an
//! empty state directory lists nothing and is not created. Real processes (`local` launcher).

mod common;

use common::{Project, alive, mirrord_up};
use serde_json::Value;

const YAML: &str = r#"
services:
  api:
    target: none
    stop_timeout: 1
    run:
      command: ["sleep", "300"]
  worker:
    target: none
    stop_timeout: 1
    run:
      command: ["sleep", "300"]
"#;

fn project(name: &str, root: Option<&Project>) -> Project {
    let mut p = Project::new(name);
    p.globals = vec!["--launcher".into(), "local".into()];
    if let Some(root) = root {
        p.state_root = root.state_root.clone();
        p.state_dir = root.state_root.join(name);
    }
    p.write_yaml(YAML);
    p
}

fn ls_json(p: &Project, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["ls", "--format", "json"];
    args.extend_from_slice(extra);
    let out = p.ok(&args);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn every_project_with_file_supervisor_and_counts() {
    let alpha = project("alpha", None);
    let beta = project("beta", Some(&alpha));
    alpha.ok(&["up", "-d"]);
    alpha.ok(&["stop", "worker", "-t", "1"]);
    beta.ok(&["up", "-d"]);

    let rows = ls_json(&alpha, &[]);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "{rows:#?}");
    let a = &rows[0];
    assert_eq!(a["file"], alpha.yaml.display().to_string(), "{a:#}");
    assert_eq!(a["services"], 2, "{a:#}");
    assert_eq!(
        a["status"],
        serde_json::json!({"running": 1, "stopped": 1}),
        "{a:#}"
    );
    let sup = a["supervisor"]["pid"].as_i64().expect("a supervisor pid") as i32;
    assert!(alive(sup), "the listed supervisor {sup} is not alive");
    assert_eq!(rows[1]["status"], serde_json::json!({"running": 2}));

    // The table: one row per project, its counts, its supervisor, its file.
    let out = beta.ok(&["ls"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("FILE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("alpha")
            && lines[1].contains("running(1), stopped(1)")
            && lines[1].contains(&format!("pid {sup}"))
            && lines[1].ends_with(&alpha.yaml.display().to_string()),
        "{out}"
    );

    // After `down`, beta records nothing: listed only with -a.
    beta.ok(&["down", "-t", "1"]);
    let rows = ls_json(&alpha, &[]);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let rows = ls_json(&alpha, &["-a"]);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[1]["services"], 0);
    assert!(rows[1]["supervisor"].is_null(), "{rows:#?}");
}

#[test]
fn an_empty_state_directory_lists_nothing_and_stays_absent() {
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("never-made");
    let out = mirrord_up()
        .current_dir(root.path())
        .arg("--state-dir")
        .arg(&state)
        .args(["ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "only the header: {text}");
    let out = mirrord_up()
        .current_dir(root.path())
        .arg("--state-dir")
        .arg(&state)
        .args(["ls", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(!state.exists(), "ls created the state directory");
}
