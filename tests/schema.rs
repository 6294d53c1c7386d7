//! The JSON schema of `mirrord-up.yaml`: the checked-in `mirrord-up.schema.json` is what
//! `mirrord-up schema` prints, it is valid draft 2020-12, it accepts every valid fixture and the
//! demo, it refuses every invalid fixture marked `# structural: yes`, and it agrees with the
//! parser on a table of edge cases.
//!
//! What is validated is what an editor checks: the file as written when it parses as YAML
//! (templates only inside strings and comments, plain text to the schema). When it does not
//! (`{% for %}` or an unquoted `{{ … }}` make the raw text not YAML, so an editor cannot check
//! it either), the file after the project's own Tera rendering (`config::template::render`, key
//! `alice`), which is what `mirrord-up` parses.
//!
//! Each `fixtures/compat/invalid/*.yaml` ends with a `# structural: yes` line (the schema must
//! refuse it) or `# structural: no (<why>)` (the error is one no schema can see: a dependency
//! cycle, a missing file, a template or YAML syntax error); the line is the last one so that the
//! lines `tests/compat.rs` pins keep their numbers.

mod common;

use std::path::Path;

use assert_cmd::Command as Cmd;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SCHEMA_FILE: &str = "mirrord-up.schema.json";
const REGENERATE: &str = "cargo run -- schema > mirrord-up.schema.json";

fn repo() -> &'static Path {
    Path::new(REPO)
}

fn checked_in_text() -> String {
    let path = repo().join(SCHEMA_FILE);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}\nGenerate it with `{REGENERATE}`", path.display()))
}

fn checked_in() -> Value {
    serde_json::from_str(&checked_in_text()).expect("mirrord-up.schema.json is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&checked_in()).expect("the schema compiles")
}

fn name(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The document an editor with the schema would check.
enum Seen {
    /// The file is YAML as written.
    Raw(Value),
    /// Only its Tera rendering (key `alice`) is YAML.
    Rendered(Value),
    /// Neither is: a template or YAML syntax error, nothing for a schema to see.
    NotYaml(String),
}

fn as_editors_see(path: &Path) -> Seen {
    let text = std::fs::read_to_string(path).expect("read fixture");
    // Editors (yaml-language-server) resolve merge keys (`<<`) before they validate.
    let parse = |text: &str| -> Result<Value, String> {
        let mut v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let _ = v.apply_merge();
        serde_json::to_value(v).map_err(|e| e.to_string())
    };
    if let Ok(value) = parse(&text) {
        return Seen::Raw(value);
    }
    let dir = path.parent().expect("fixture directory");
    match mirrord_up::config::template::render(&text, "alice", dir) {
        Err(e) => Seen::NotYaml(format!("template: {}", e.message)),
        Ok(rendered) => match parse(&rendered) {
            Ok(value) => Seen::Rendered(value),
            Err(e) => Seen::NotYaml(format!("YAML: {e}")),
        },
    }
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checked-in copy

#[test]
fn checked_in_schema_is_what_the_binary_prints() {
    let out = Cmd::new(env!("CARGO_BIN_EXE_mirrord-up"))
        .arg("schema")
        .output()
        .expect("run mirrord-up schema");
    assert!(
        out.status.success(),
        "`mirrord-up schema` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let file = checked_in_text();
    if printed != file {
        let line = printed
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_owned(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "{SCHEMA_FILE} is out of date with the config types ({line}).\n\
             Regenerate it with `{REGENERATE}` and commit it."
        );
    }
}

#[test]
fn schema_is_draft_2020_12_with_id_and_title() {
    let schema = checked_in();
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{SCHEMA_FILE} is not a valid draft 2020-12 schema: {e}");
    }
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "$schema"
    );
    assert!(
        schema["$id"]
            .as_str()
            .is_some_and(|id| id.ends_with(SCHEMA_FILE)),
        "$id: {}",
        schema["$id"]
    );
    assert_eq!(schema["title"], "mirrord-up.yaml");
}

/// The extensions of spec §4.3 are in, each with a description (so editors explain them).
#[test]
fn schema_describes_every_extension() {
    let schema = checked_in();
    let service = &schema["$defs"]["ServiceConfig"]["properties"];
    for key in mirrord_up::config::EXTENSION_KEYS {
        let description = service[key]["description"].as_str().unwrap_or_default();
        assert!(
            description.starts_with("mirrord-up extension"),
            "services.<name>.{key}: {description:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

#[test]
fn schema_accepts_every_valid_fixture_and_the_demo() {
    let validator = validator();
    let mut files = common::compat_fixtures("valid");
    files.push(repo().join("fixtures/demo/mirrord-up.yaml"));
    let mut failures = Vec::new();
    for file in &files {
        let (how, value) = match as_editors_see(file) {
            Seen::Raw(v) => ("as written", v),
            Seen::Rendered(v) => ("rendered", v),
            Seen::NotYaml(why) => {
                failures.push(format!("{}: not YAML, even rendered: {why}", name(file)));
                continue;
            }
        };
        let errs = errors(&validator, &value);
        if !errs.is_empty() {
            failures.push(format!(
                "{} ({how}) is refused:\n  {}",
                name(file),
                errs.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} valid files fail the schema:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// `yes`, or `no` with its reason, from the fixture's last line.
fn structural(path: &Path) -> Result<Result<(), String>, String> {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let tagged: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# structural:"))
        .collect();
    let last = text.lines().last().unwrap_or_default();
    match tagged.as_slice() {
        [one] if *one == last => {}
        [] => {
            return Err("no `# structural: yes|no (<why>)` line: classify the fixture".into());
        }
        [_] => return Err("the `# structural:` line must be the last line".into()),
        _ => return Err("more than one `# structural:` line".into()),
    }
    let value = last["# structural:".len()..].trim();
    if value == "yes" {
        return Ok(Ok(()));
    }
    match value
        .strip_prefix("no (")
        .and_then(|r| r.strip_suffix(')'))
        .map(str::trim)
    {
        Some(why) if !why.is_empty() => Ok(Err(why.to_owned())),
        _ => Err(format!(
            "`# structural: {value}`: expected `yes` or `no (<why>)`"
        )),
    }
}

#[test]
fn schema_refuses_every_structurally_invalid_fixture() {
    let validator = validator();
    let files = common::compat_fixtures("invalid");
    let mut failures = Vec::new();
    let mut refused = 0;
    for file in &files {
        let class = match structural(file) {
            Ok(class) => class,
            Err(e) => {
                failures.push(format!("{}: {e}", name(file)));
                continue;
            }
        };
        let seen = as_editors_see(file);
        match (class, seen) {
            (Ok(()), Seen::Raw(v) | Seen::Rendered(v)) => {
                if validator.is_valid(&v) {
                    failures.push(format!(
                        "{}: marked `structural: yes` but the schema accepts it",
                        name(file)
                    ));
                } else {
                    refused += 1;
                }
            }
            (Ok(()), Seen::NotYaml(why)) => failures.push(format!(
                "{}: marked `structural: yes` but it is not YAML ({why}): mark it `no (…)`",
                name(file)
            )),
            // `no` means no schema can see the error: if this one does, the fixture is
            // misclassified (and a test of the schema would be lost).
            (Err(why), Seen::Raw(v) | Seen::Rendered(v)) => {
                let errs = errors(&validator, &v);
                if !errs.is_empty() {
                    failures.push(format!(
                        "{}: marked `structural: no ({why})` but the schema refuses it: mark it `yes`\n  {}",
                        name(file),
                        errs.join("\n  ")
                    ));
                }
            }
            (Err(_), Seen::NotYaml(_)) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid fixtures:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    assert!(refused > 0, "no fixture is marked `structural: yes`");
}

// ---------------------------------------------------------------------------------------------
// Agreement with the parser on what the hand-written visitors accept

/// A one-service file whose service `a` has these extra lines (6-space indented).
fn service(extra: &str) -> String {
    let mut text = String::from("services:\n  a:\n    run: {command: [x]}\n");
    for line in extra.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Service `a` with these extra keys (a flow mapping's body), and a service `b`.
fn two(extra: &str) -> String {
    format!("services:\n  a: {{run: {{command: [x]}}, {extra}}}\n  b: {{run: {{command: [x]}}}}\n")
}

/// `(yaml, valid)`: the file as given, and whether mirrord-up loads it. Only errors a schema can
/// see: no cycles, no unknown dependencies, no missing files.
fn probes() -> Vec<(String, bool)> {
    let s = |extra: &str, ok: bool| (service(extra), ok);
    let file = |text: &str, ok: bool| (text.to_owned(), ok);
    vec![
        // top level, common, services
        file("services: {a: {run: {command: [x]}}}\n", true),
        file("common: {}\nservices: {a: {run: {command: [x]}}}\n", true),
        file("common:\nservices: {a: {run: {command: [x]}}}\n", true),
        file(
            "common: {context: 2024}\nservices: {a: {run: {command: [x]}}}\n",
            true,
        ),
        file(
            "common: {operator: ~}\nservices: {a: {run: {command: [x]}}}\n",
            true,
        ),
        file(
            "common: {operator: 1}\nservices: {a: {run: {command: [x]}}}\n",
            false,
        ),
        file("services: {}\n", false),
        file("services: ~\n", false),
        file("services: {a: ~}\n", false),
        // compose's `x-*` keys are ignored at the top level only
        file("x-y: 1\nservices: {a: {run: {command: [x]}}}\n", true),
        file("y-x: 1\nservices: {a: {run: {command: [x]}}}\n", false),
        s("x-y: 1", false),
        s("profiles: [debug]", true),
        s("profiles: debug", false),
        // service names (compose's rule) and the ranges of numbers
        file("services: {a.b_c-9: {run: {command: [x]}}}\n", true),
        file("services: {..: {run: {command: [x]}}}\n", false),
        file("services: {a/b: {run: {command: [x]}}}\n", false),
        file("services: {\"a\\nb\": {run: {command: [x]}}}\n", false),
        s("ignore_ports: ~", true),
        s("ignore_ports: [0]", false),
        s("ignore_ports: [65535]", true),
        s("ready: {tcp: 0}", false),
        s("stop_timeout: 86400", true),
        s("stop_timeout: 86401", false),
        s("stop_timeout: 1e30", false),
        // target: the three forms
        s("target: none", true),
        s("target: ~", true),
        s("target: {}", true),
        s("target: {namespace: ns}", true),
        s("target: {namespace: 2024}", true),
        s("target: {path: ~}", true),
        s("target: None", false),
        s("target: 1", false),
        s("target: [none]", false),
        s("target: {path: deployment/x, ns: y}", false),
        // target.path: the string grammar and the map form
        s("target: {path: deploy/x}", true),
        s("target: {path: replicaset/x/container/c}", true),
        s("target: {path: targetless}", true),
        s("target: {path: deployment}", false),
        s("target: {path: deployment/}", false),
        s("target: {path: pod/x/y}", false),
        s("target: {path: pod/x/container}", false),
        s("target: {path: pod/x/container/}", false),
        s("target: {path: label/x}", false),
        s("target: {path: Deployment/x}", false),
        s("target: {path: {rollout: r}}", true),
        s("target: {path: {labels: {app: web}}}", true),
        s("target: {path: {cron_job: c, container: m}}", true),
        s("target: {path: {container: m}}", false),
        s("target: {path: {pod: p, job: j}}", false),
        s("target: {path: {cronjob: c}}", false),
        s("target: {path: {pod: 1}}", true),
        s("target: {path: {labels: {app: web, tier: 2}}}", true),
        s("target: {path: {labels: ~}}", false),
        s("target: {path: {pod: [p]}}", false),
        // run.command
        file("services: {a: {run: {command: [x, 1, true, 1.5]}}}\n", true),
        file("services: {a: {run: {command: []}}}\n", false),
        file("services: {a: {run: {command: x}}}\n", false),
        file("services: {a: {run: {command: [[x]]}}}\n", false),
        file("services: {a: {run: {command: [~]}}}\n", false),
        file(
            "services: {a: {run: {type: container, command: [docker, run, x]}}}\n",
            true,
        ),
        file(
            "services: {a: {run: {type: docker, command: [x]}}}\n",
            false,
        ),
        file("services: {a: {run: {command: [x], cwd: .}}}\n", false),
        file("services:\n  a:\n    run:\n", false),
        // env (lenient) and http_filter
        s("env: {override: {A: 1, B: x, C: false}}", true),
        s("env: {override: {A: ~}}", false),
        s("env: {override: {A: [x]}}", false),
        s("env: {include: \"A;B\", exclude: [A, 1]}", true),
        s("env: {include: 1}", false),
        s("env: {whatever: [1, 2]}", true),
        s("http_filter: {ports: 80}", true),
        s("http_filter: {ports: [80, 443]}", true),
        s("http_filter: {ports: 70000}", false),
        s("http_filter: {ports: -1}", false),
        s("http_filter: {ports: \"80\"}", false),
        s("http_filter: {all_of: [{header: x}, 3]}", true),
        s("http_filter: {header_fliter: x}", true),
        s("ignore_ports: [1, 1, 65535]", true),
        s("ignore_ports:", true),
        s("ignore_ports: [65536]", false),
        // depends_on: list, map (entries may be empty), null
        s("depends_on: ~", true),
        s("depends_on: []", true),
        s("depends_on: {}", true),
        s("depends_on: a", false),
        s("depends_on: [[a]]", false),
        file(&two("depends_on: [b]"), true),
        file(&two("depends_on: {b: ~}"), true),
        file(
            &two("depends_on: {b: {condition: completed_successfully, restart: true}}"),
            true,
        ),
        file(&two("depends_on: {b: {condition: bogus}}"), false),
        file(&two("depends_on: {b: {when: ready}}"), false),
        file(&two("depends_on: [[b]]"), false),
        // a number names a service by its text
        file(
            "services: {a: {run: {command: [x]}, depends_on: [8080]}, \"8080\": {run: {command: [x]}}}\n",
            true,
        ),
        s("restart: on-failure\nmax_restarts: 0", true),
        s("restart: no", true),
        s("restart: false", false),
        s("restart: On-Failure", false),
        s("max_restarts: -1", false),
        // durations
        s("stop_timeout: 0", true),
        s("stop_timeout: 2.5", true),
        s("stop_timeout: \"1.5s\"", true),
        s("stop_timeout: \" 10 ms \"", true),
        s("stop_timeout: \".5m\"", true),
        s("stop_timeout: \"1h\"", true),
        s("stop_timeout: ~", true),
        s("stop_timeout: \"10\"", false),
        s("stop_timeout: \"10d\"", false),
        s("stop_timeout: \"-1s\"", false),
        s("stop_timeout: \"1.2.3s\"", false),
        s("stop_timeout: \"s\"", false),
        s("stop_timeout: -0.5", false),
        s("stop_timeout: true", false),
        // signals
        s("stop_signal: SIGTERM", true),
        s("stop_signal: term", true),
        s("stop_signal: SigUsr1", true),
        s("stop_signal: \" INT \"", true),
        s("stop_signal: SIGSIGTERM", false),
        s("stop_signal: SIG TERM", false),
        s("stop_signal: 15", false),
        s("stop_signal: ~", true),
        // ready
        s("ready: {}", true),
        s("ready: ~", true),
        s("ready: {log: \"ok\", timeout: 5}", true),
        s("ready: {log: x, tcp: ~}", true),
        s("ready: {tcp: 80, http: ~}", false),
        // the parser hands `~` to the regex check as text, and `~` is a valid regex
        s("ready: {log: ~}", true),
        s("ready: {log: 1}", true),
        s("ready: {http: ~}", false),
        s("ready: {http: \"https://x\"}", false),
        s("ready: {http: \"http://x/health\"}", true),
        s("ready: {tcp: 80, http: \"http://x\"}", false),
        s("ready: {log: x, tcp: 80}", false),
        s("ready: {log: ~, tcp: 80}", false),
        s("ready: {log: x, http: \"http://x\"}", false),
        s("ready: {tcp: 70000}", false),
        s("ready: {port: 80}", false),
        // paths
        s("working_dir: .", true),
        s("working_dir: 1", true),
        s("working_dir: [a]", false),
        s("context: {a: 1}", false),
        s("skip: yes", false),
        s("default_mode: Split", false),
        s("default_mode: replace", true),
    ]
}

/// Where the schema cannot say what the parser does: `(yaml, parser accepts, schema accepts,
/// why)`. Each is checked to still diverge, so that a fixed one leaves this list.
const DIVERGENCES: &[(&str, bool, bool, &str)] = &[
    (
        "common: ~\nservices: {a: {run: {command: [x]}}}\n",
        false,
        true,
        "`common:` (accepted, an empty mapping to the parser) and `common: ~` are the same null in JSON",
    ),
    (
        "services: {a: {run: {command: [x]}, target: {path: {pod: ~}}}}\n",
        true,
        false,
        "the parser reads a `~` where it wants a string as the text `~`; a schema allowing null there would invite mistakes",
    ),
    (
        "services: {a: {run: {command: [x]}, ready: {tcp: 8080.0}}}\n",
        false,
        true,
        "JSON Schema's `integer` includes 8080.0; the parser wants an integer literal",
    ),
    (
        "services: {a: {run: {command: [x]}, stop_timeout: .nan}}\n",
        false,
        true,
        "NaN has no JSON form: it converts to null (absent)",
    ),
];

#[test]
fn known_divergences_still_diverge() {
    let validator = validator();
    let mut failures = Vec::new();
    for (text, parser, schema, why) in DIVERGENCES {
        let value: Value = serde_yaml::from_str(text).expect("divergences are YAML");
        let by_schema = validator.is_valid(&value);
        let by_parser = loads(text).is_ok();
        if (by_parser, by_schema) != (*parser, *schema) {
            failures.push(format!(
                "{text}  ({why}): now parser {by_parser}, schema {by_schema}: move it to `probes`"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the binary does with the file: `mirrord_up::config::UpDocument::load`, which parses
/// and validates (cycles and unknown dependencies included).
fn loads(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mirrord-up.yaml");
    std::fs::write(&path, text).expect("write probe");
    mirrord_up::config::UpDocument::load(&path, Some("alice"))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn schema_and_parser_agree_on_edge_cases() {
    let validator = validator();
    let mut failures = Vec::new();
    for (text, valid) in probes() {
        let value: Value = serde_yaml::from_str(&text).expect("probes are YAML");
        let by_schema = validator.is_valid(&value);
        let by_parser = loads(&text);
        if by_schema != valid || by_parser.is_ok() != valid {
            failures.push(format!(
                "{text}  expected {}: schema says {}, parser says {}",
                if valid { "valid" } else { "invalid" },
                if by_schema { "valid" } else { "invalid" },
                match &by_parser {
                    Ok(()) => "valid".to_owned(),
                    Err(e) => format!("invalid ({})", e.lines().next().unwrap_or_default()),
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} probes disagree:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
