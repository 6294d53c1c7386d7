//! `init`: the interactive wizard that writes a `mirrord-up.yaml`, asking the questions of real
//! `mirrord up init` (compat §4.3) and writing its output form (compat §4.4).
//!
//! Departures from the real wizard, on purpose: services keep the order they were entered in
//! (mirrord's `HashMap` shuffles them), the local command is split like a shell splits it
//! (`sh -c "echo hi"` is three words, an unbalanced quote is refused at the prompt), a command
//! for `mirrord container` must be a `docker|podman|nerdctl run`, a target the chosen mode
//! cannot use is refused at the prompt, and without a terminal the wizard says how to write the
//! file by hand instead of failing inside a prompt. The invalid-certificates question is only
//! asked when the operator is used. After each service's questions, one "Add mirrord-up
//! options?" (default no) leads to mirrord-up's own keys (`depends_on`, `ready`, `restart`);
//! once written, the wizard names the next commands and the schema line.
//!
//! The answers are collected into a [`Draft`] and rendered by [`render`]; both are free of any
//! terminal so that the output form is unit-tested without one.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use inquire::validator::Validation;
use inquire::{Confirm, InquireError, Select, Text};

use super::Context;
use crate::config::{Mode, RunType, TargetPath};

const TARGET_INFER: &str = "Infer from the service name";
const TARGET_SPECIFY: &str = "Specify a target";
const TARGET_NONE: &str = "Run without a target (outgoing traffic only)";
const PORTS_CUSTOM: &str = "Custom...";
const PORT_PRESETS: &[(&str, &[u16])] = &[
    ("None", &[]),
    ("Istio sidecar (9090, 9091, 15090)", &[9090, 9091, 15090]),
    ("Linkerd sidecar (4140, 4143, 4191)", &[4140, 4143, 4191]),
    (PORTS_CUSTOM, &[]),
];

/// Everything the wizard asked, in the order it was asked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    pub accept_invalid_certificates: Option<bool>,
    pub operator: Option<bool>,
    pub telemetry: Option<bool>,
    pub services: Vec<(String, ServiceDraft)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDraft {
    pub target: TargetChoice,
    /// `env.override`, in the order entered; a repeated name keeps its first place.
    pub env: Vec<(String, String)>,
    pub mode: Mode,
    pub header_filter: Option<String>,
    pub ignore_ports: BTreeSet<u16>,
    pub run_type: RunType,
    pub command: Vec<String>,
    /// mirrord-up's own keys, when the user asked for them.
    pub extensions: Option<Extensions>,
}

/// The mirrord-up extensions the wizard offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extensions {
    pub depends_on: Vec<String>,
    pub ready: Ready,
    /// `on-failure` or `always`; `None`: no (the default).
    pub restart: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Ready {
    /// mirrord's `Ready!` line: nothing written.
    #[default]
    Default,
    Log(String),
    Tcp(u16),
    Http(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetChoice {
    /// No path: `up` infers it from the service name, in `namespace` if given.
    Infer { namespace: Option<String> },
    Path {
        path: String,
        namespace: Option<String>,
    },
    /// `target: none`.
    Targetless,
}

pub fn run(ctx: &Context, output: &Path) -> Result<ExitCode> {
    let has_terminal = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    if !has_terminal {
        anyhow::bail!(
            "`mirrord-up init` is an interactive wizard and needs a terminal (stdin, stdout and stderr must be a TTY).\n  \
             Write mirrord-up.yaml by hand instead: every key is described in the \"YAML reference\" section of README.md,\n  \
             and `mirrord-up schema > mirrord-up.schema.json` gives your editor completion and validation."
        );
    }
    if !ctx.stderr_color() {
        inquire::set_global_render_config(inquire::ui::RenderConfig::empty());
    }
    // Ctrl-U and Ctrl-W edit the line, as in a shell (inquire alone types `u` and `w`).
    let line_keys = super::line_keys::install();
    let result = wizard(output);
    drop(line_keys);
    match result {
        Ok(code) => Ok(code),
        // Ctrl-C in raw mode arrives as a key, not as SIGINT: exit as if it had been one.
        Err(InquireError::OperationInterrupted) => {
            eprintln!("Interrupted. No file written.");
            Ok(ExitCode::from(crate::error::EXIT_INTERRUPTED))
        }
        Err(InquireError::OperationCanceled) => {
            eprintln!("Cancelled. No file written.");
            Ok(ExitCode::from(crate::error::EXIT_FAILURE))
        }
        Err(e) => Err(anyhow::anyhow!("init: prompt failed: {e}")),
    }
}

fn wizard(output: &Path) -> Result<ExitCode, InquireError> {
    println!("Welcome to `mirrord-up init`. This wizard generates a skeleton mirrord-up.yaml.\n");
    println!("--- Step 1: Common settings (apply to all services) ---");
    let mut draft = Draft::default();
    let operator = Confirm::new("Use the mirrord operator?")
        .with_default(true)
        .with_help_message("Required for splitting traffic between services.")
        .prompt()?;
    // Certificates are the operator's: no question about them once it is declined.
    let accept_invalid = operator
        && Confirm::new("Accept invalid TLS certificates for the operator?")
            .with_default(false)
            .with_help_message("Skip TLS verification. Useful for self-signed certs.")
            .prompt()?;
    let telemetry = Confirm::new("Enable anonymous telemetry?")
        .with_default(true)
        .with_help_message("Sends anonymous usage data to help improve mirrord.")
        .prompt()?;
    // Only what differs from mirrord's defaults is written, as the real wizard does.
    draft.operator = (!operator).then_some(false);
    draft.accept_invalid_certificates = accept_invalid.then_some(true);
    draft.telemetry = (!telemetry).then_some(false);

    println!("\n--- Step 2: Services ---");
    loop {
        let taken: Vec<String> = draft.services.iter().map(|(n, _)| n.clone()).collect();
        let service = ask_service(taken)?;
        draft.services.push(service);
        if !Confirm::new("Add another service?")
            .with_default(false)
            .prompt()?
        {
            break;
        }
    }

    let yaml = render(&draft);
    println!("\n--- Step 3: Preview ---\n{yaml}");
    if !Confirm::new("Save configuration to a file?")
        .with_default(true)
        .prompt()?
    {
        println!("No file written.");
        return Ok(ExitCode::SUCCESS);
    }
    let default = output.to_string_lossy().into_owned();
    loop {
        let answer = Text::new("Enter filename:")
            .with_default(&default)
            .with_validator(|s: &str| {
                Ok(if s.trim().is_empty() {
                    Validation::Invalid("filename cannot be empty".into())
                } else {
                    Validation::Valid
                })
            })
            .prompt()?;
        let path = PathBuf::from(answer.trim());
        let exists = path.symlink_metadata().is_ok();
        if exists
            && !Confirm::new(&format!("{} exists. Overwrite?", path.display()))
                .with_default(false)
                .prompt()?
        {
            continue;
        }
        match write_file(&path, &yaml, exists) {
            Ok(()) => {
                println!("Wrote {}.", path.display());
                println!("{}", next_steps(&path));
                return Ok(ExitCode::SUCCESS);
            }
            // Created by someone else since we looked: ask about overwriting it next round.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// What to run next, with `-f` unless the file is the one every command finds by itself.
fn next_steps(path: &Path) -> String {
    let file = if path == Path::new(super::discover::FILE_NAME) {
        String::new()
    } else {
        let p = path.to_string_lossy();
        format!(
            " -f {}",
            shlex::try_quote(&p).unwrap_or(std::borrow::Cow::Borrowed(&p))
        )
    };
    format!(
        "\nNext:\n  mirrord-up{file} check          # validate it (`--compat`: what real `mirrord up` would reject)\n  mirrord-up{file} up             # start every service and follow their logs\n\nEditor completion and validation: `mirrord-up schema > mirrord-up.schema.json`, then as the\nfile's first line:\n  # yaml-language-server: $schema=./mirrord-up.schema.json"
    )
}

/// A new file is created exclusively, so that a file appearing after the question is never
/// clobbered unasked; an agreed overwrite replaces the file atomically.
fn write_file(path: &Path, yaml: &str, overwrite: bool) -> std::io::Result<()> {
    if overwrite {
        let mut file = atomic_write_file::AtomicWriteFile::open(path)?;
        file.write_all(yaml.as_bytes())?;
        file.commit()
    } else {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(yaml.as_bytes())
    }
}

fn ask_service(taken: Vec<String>) -> Result<(String, ServiceDraft), InquireError> {
    let earlier = taken.clone();
    let name = Text::new("Service name:")
        .with_validator(move |s: &str| Ok(to_validation(check_service_name(s, &taken))))
        .prompt()?
        .trim()
        .to_owned();

    let mode = match Select::new("Mode:", vec!["split", "replace"]).prompt()? {
        "replace" => Mode::Replace,
        _ => Mode::Split,
    };

    let mut target_options = vec![TARGET_INFER, TARGET_SPECIFY];
    // mirrord copies and scales down the target in replace mode: there must be one.
    if mode == Mode::Split {
        target_options.push(TARGET_NONE);
    }
    let target = match Select::new("Target:", target_options).prompt()? {
        TARGET_SPECIFY => {
            let path = Text::new("Target path (e.g. `deployment/foo`, `pod/bar/container/app`):")
                .with_validator(move |s: &str| Ok(to_validation(check_target_path(s, mode))))
                .prompt()?
                .trim()
                .to_owned();
            TargetChoice::Path {
                path,
                namespace: ask_namespace()?,
            }
        }
        TARGET_NONE => TargetChoice::Targetless,
        _ => TargetChoice::Infer {
            namespace: ask_namespace()?,
        },
    };

    let header_filter = match mode {
        Mode::Split => non_empty(
            Text::new("HTTP header filter (regex; blank for auto session-key filter):")
                .with_help_message("Example: `session-id: my-session-identifier`")
                .prompt()?,
        ),
        Mode::Replace => None,
    };

    let ignore_ports = ask_ignore_ports()?;

    let mut env: Vec<(String, String)> = Vec::new();
    while Confirm::new("Add an env-var override for the local process?")
        .with_default(false)
        .prompt()?
    {
        let key = Text::new("  Variable name:")
            .with_validator(|s: &str| {
                Ok(if s.trim().is_empty() {
                    Validation::Invalid("name cannot be empty".into())
                } else {
                    Validation::Valid
                })
            })
            .prompt()?
            .trim()
            .to_owned();
        let value = Text::new("  Value:").prompt()?;
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => env.push((key, value)),
        }
    }

    let run_type = match Select::new(
        "Run with `mirrord exec` or `mirrord container`?",
        vec!["exec", "container"],
    )
    .prompt()?
    {
        "container" => RunType::Container,
        _ => RunType::Exec,
    };
    let command = Text::new("Local command (e.g. `go run ./cmd/api`):")
        .with_validator(move |s: &str| Ok(to_validation(split_command(s, run_type).map(drop))))
        .prompt()?;
    let command = split_command(&command, run_type).expect("checked by the validator");

    // Past the questions of real `mirrord up init`: mirrord-up's own keys, behind one question.
    let extensions = if Confirm::new("Add mirrord-up options?")
        .with_default(false)
        .with_help_message(
            "depends_on, ready, restart: mirrord-up extensions (real `mirrord up` rejects a file using them)",
        )
        .prompt()?
    {
        Some(ask_extensions(&earlier)?)
    } else {
        None
    };

    Ok((
        name,
        ServiceDraft {
            target,
            env,
            mode,
            header_filter,
            ignore_ports,
            run_type,
            command,
            extensions,
        },
    ))
}

const READY_DEFAULT: &str = "mirrord prints `Ready!` (default)";
const READY_LOG: &str = "A line of its output matches a regex";
const READY_TCP: &str = "A local TCP port accepts connections";
const READY_HTTP: &str = "An http:// URL answers 2xx";

fn ask_extensions(earlier: &[String]) -> Result<Extensions, InquireError> {
    let mut ext = Extensions::default();
    if !earlier.is_empty() {
        let known = earlier.to_vec();
        let answer = Text::new("Depends on (comma-separated; blank for none):")
            .with_help_message(&format!("Started before this one: {}", earlier.join(", ")))
            .with_validator(move |s: &str| Ok(to_validation(parse_depends_on(s, &known).map(drop))))
            .prompt()?;
        ext.depends_on = parse_depends_on(&answer, earlier).expect("checked by the validator");
    }
    ext.ready = match Select::new(
        "Ready when:",
        vec![READY_DEFAULT, READY_LOG, READY_TCP, READY_HTTP],
    )
    .prompt()?
    {
        READY_LOG => Ready::Log(
            Text::new("Regex:")
                .with_validator(|s: &str| {
                    Ok(to_validation(
                        regex::Regex::new(s.trim())
                            .map(drop)
                            .map_err(|e| format!("not a regex: {e}")),
                    ))
                })
                .prompt()?
                .trim()
                .to_owned(),
        ),
        READY_TCP => {
            let port = Text::new("Port:")
                .with_validator(|s: &str| Ok(to_validation(parse_port(s).map(drop))))
                .prompt()?;
            Ready::Tcp(parse_port(&port).expect("checked by the validator"))
        }
        READY_HTTP => Ready::Http(
            Text::new("URL (http://…):")
                .with_validator(|s: &str| {
                    Ok(if s.trim().starts_with("http://") {
                        Validation::Valid
                    } else {
                        Validation::Invalid("an http:// URL (https is not probed)".into())
                    })
                })
                .prompt()?
                .trim()
                .to_owned(),
        ),
        _ => Ready::Default,
    };
    ext.restart =
        match Select::new("Restart when it exits:", vec!["no", "on-failure", "always"]).prompt()? {
            "no" => None,
            policy => Some(policy.to_owned()),
        };
    Ok(ext)
}

/// Names of services entered before this one, comma-separated.
fn parse_depends_on(input: &str, earlier: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in input.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !earlier.iter().any(|e| e == name) {
            return Err(format!(
                "no service `{name}` above (known: {})",
                earlier.join(", ")
            ));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn parse_port(input: &str) -> Result<u16, String> {
    match input.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("`{}` is not a port (1-65535)", input.trim())),
    }
}

fn ask_namespace() -> Result<Option<String>, InquireError> {
    Ok(non_empty(
        Text::new("Namespace (blank for cluster default):").prompt()?,
    ))
}

fn ask_ignore_ports() -> Result<BTreeSet<u16>, InquireError> {
    let labels: Vec<&str> = PORT_PRESETS.iter().map(|(label, _)| *label).collect();
    let choice = Select::new("Ports to ignore (sidecar ports, etc.):", labels).prompt()?;
    if choice == PORTS_CUSTOM {
        let list = Text::new("Comma-separated ports:")
            .with_validator(|s: &str| Ok(to_validation(parse_ports(s).map(drop))))
            .prompt()?;
        return Ok(parse_ports(&list).expect("checked by the validator"));
    }
    Ok(PORT_PRESETS
        .iter()
        .find(|(label, _)| *label == choice)
        .map(|(_, ports)| ports.iter().copied().collect())
        .unwrap_or_default())
}

fn to_validation(check: Result<(), String>) -> Validation {
    match check {
        Ok(()) => Validation::Valid,
        Err(message) => Validation::Invalid(message.into()),
    }
}

fn non_empty(answer: String) -> Option<String> {
    let trimmed = answer.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn check_service_name(input: &str, taken: &[String]) -> Result<(), String> {
    let name = input.trim();
    if name.is_empty() {
        Err("name cannot be empty".into())
    } else if taken.iter().any(|t| t == name) {
        Err("a service with that name already exists".into())
    } else {
        crate::config::check_name(name)
    }
}

/// mirrord's target grammar, plus what `up` would refuse later for this mode (compat §1.5,
/// §1.10), so that the wizard never writes a file that cannot start.
fn check_target_path(input: &str, mode: Mode) -> Result<(), String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("the target path cannot be empty".into());
    }
    let path = TargetPath::parse(text)?;
    if path.is_targetless() {
        return Err(match mode {
            Mode::Split => format!(
                "`targetless` as a path fails in steal mode: choose \"{TARGET_NONE}\" instead"
            ),
            Mode::Replace => "replace mode copies the target: it needs a workload".into(),
        });
    }
    let kind = path.kind();
    if mode == Mode::Replace && matches!(kind, "rollout" | "service" | "label" | "pod") {
        return Err(format!(
            "replace mode copies the target and scales it down, which a {kind} target does not allow: use a deployment, statefulset, replicaset, job or cronjob"
        ));
    }
    Ok(())
}

/// The command as a shell would split it; `mirrord container` runs a container-runtime `run`.
fn split_command(input: &str, run_type: RunType) -> Result<Vec<String>, String> {
    let words = shlex::split(input)
        .ok_or("unbalanced quote or trailing backslash: close the quote, or escape it with `\\`")?;
    if words.is_empty() {
        return Err("command cannot be empty".into());
    }
    if run_type == RunType::Container {
        let runtime_run = matches!(words[0].as_str(), "docker" | "podman" | "nerdctl")
            && words.get(1).is_some_and(|w| w == "run");
        if !runtime_run {
            return Err(
                "`mirrord container` runs `docker run …`, `podman run …` or `nerdctl run …`".into(),
            );
        }
    }
    Ok(words)
}

/// Comma-separated ports; blanks between commas are ignored.
fn parse_ports(input: &str) -> Result<BTreeSet<u16>, String> {
    input
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            match p.parse::<u16>() {
                // mirrord's own message for what is not a u16.
                Err(_) => Err(format!("`{p}` is not a valid u16 port")),
                Ok(0) => Err("`0` is not a port mirrord-up accepts (1 to 65535)".into()),
                Ok(port) => Ok(port),
            }
        })
        .collect()
}

/// The YAML of compat §4.4: what real mirrord writes by serializing its config with serde_yaml,
/// pruning nulls and empty maps and lists, and inlining `command` and `ignore_ports` as JSON
/// flow arrays. `default_mode`, `skip: false` and `run.type` are always written.
pub fn render(draft: &Draft) -> String {
    let mut out = String::new();
    let common = [
        (
            "accept_invalid_certificates",
            draft.accept_invalid_certificates,
        ),
        ("operator", draft.operator),
        ("telemetry", draft.telemetry),
    ];
    if common.iter().any(|(_, v)| v.is_some()) {
        out.push_str("common:\n");
        for (key, value) in common {
            if let Some(v) = value {
                out.push_str(&format!("  {key}: {v}\n"));
            }
        }
    }
    out.push_str("services:\n");
    for (name, svc) in &draft.services {
        out.push_str(&format!("  {}:\n", scalar(name)));
        match &svc.target {
            TargetChoice::Targetless => out.push_str("    target: none\n"),
            TargetChoice::Infer { namespace: None } => {}
            TargetChoice::Infer {
                namespace: Some(ns),
            } => out.push_str(&format!("    target:\n      namespace: {}\n", scalar(ns))),
            TargetChoice::Path { path, namespace } => {
                out.push_str(&format!("    target:\n      path: {}\n", scalar(path)));
                if let Some(ns) = namespace {
                    out.push_str(&format!("      namespace: {}\n", scalar(ns)));
                }
            }
        }
        if !svc.env.is_empty() {
            out.push_str("    env:\n      override:\n");
            for (k, v) in &svc.env {
                out.push_str(&format!("        {}: {}\n", scalar(k), scalar(v)));
            }
        }
        out.push_str(&format!("    default_mode: {}\n", svc.mode));
        if let Some(filter) = &svc.header_filter {
            out.push_str(&format!(
                "    http_filter:\n      header_filter: {}\n",
                scalar(filter)
            ));
        }
        if !svc.ignore_ports.is_empty() {
            let ports: Vec<String> = svc.ignore_ports.iter().map(u16::to_string).collect();
            out.push_str(&format!("    ignore_ports: [{}]\n", ports.join(", ")));
        }
        out.push_str("    skip: false\n");
        if let Some(ext) = &svc.extensions {
            render_extensions(&mut out, ext);
        }
        let words: Vec<String> = svc
            .command
            .iter()
            .map(|w| serde_json::to_string(w).expect("strings are JSON"))
            .collect();
        out.push_str(&format!(
            "    run:\n      type: {}\n      command: [{}]\n",
            svc.run_type.as_str(),
            words.join(", ")
        ));
    }
    out
}

fn render_extensions(out: &mut String, ext: &Extensions) {
    if !ext.depends_on.is_empty() {
        out.push_str("    depends_on:\n");
        for d in &ext.depends_on {
            out.push_str(&format!("      - {}\n", scalar(d)));
        }
    }
    match &ext.ready {
        Ready::Default => {}
        Ready::Log(re) => out.push_str(&format!("    ready:\n      log: {}\n", scalar(re))),
        Ready::Tcp(port) => out.push_str(&format!("    ready:\n      tcp: {port}\n")),
        Ready::Http(url) => out.push_str(&format!("    ready:\n      http: {}\n", scalar(url))),
    }
    if let Some(policy) = &ext.restart {
        out.push_str(&format!("    restart: {policy}\n"));
    }
}

/// One string as serde_yaml quotes it (plain when unambiguous), so that the file reads as
/// mirrord's own wizard output; a string serde_yaml would spread over several lines (a block
/// scalar) is written as a JSON string instead, which YAML reads the same way.
fn scalar(s: &str) -> String {
    let yaml = serde_yaml::to_string(s).expect("strings are YAML");
    let yaml = yaml.strip_suffix('\n').unwrap_or(&yaml);
    if yaml.contains('\n') {
        serde_json::to_string(s).expect("strings are JSON")
    } else {
        yaml.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TargetConfig, UpDocument};

    fn service(target: TargetChoice, command: &[&str]) -> ServiceDraft {
        ServiceDraft {
            target,
            env: Vec::new(),
            mode: Mode::Split,
            header_filter: None,
            ignore_ports: BTreeSet::new(),
            run_type: RunType::Exec,
            command: command.iter().map(|w| w.to_string()).collect(),
            extensions: None,
        }
    }

    /// The worked example of compat §4.4, verbatim.
    fn compat_example() -> Draft {
        let mut api = service(
            TargetChoice::Path {
                path: "deployment/api".into(),
                namespace: Some("staging".into()),
            },
            &["go", "run", "./cmd/api"],
        );
        api.env = vec![("FOO".into(), "bar".into())];
        api.ignore_ports = [9090, 9091, 15090].into();
        let mut worker = service(TargetChoice::Targetless, &["docker", "run", "web:latest"]);
        worker.run_type = RunType::Container;
        Draft {
            operator: Some(false),
            telemetry: Some(false),
            services: vec![("api".into(), api), ("worker".into(), worker)],
            ..Draft::default()
        }
    }

    #[test]
    fn renders_the_form_of_the_real_wizard() {
        let expected = "\
common:
  operator: false
  telemetry: false
services:
  api:
    target:
      path: deployment/api
      namespace: staging
    env:
      override:
        FOO: bar
    default_mode: split
    ignore_ports: [9090, 9091, 15090]
    skip: false
    run:
      type: exec
      command: [\"go\", \"run\", \"./cmd/api\"]
  worker:
    target: none
    default_mode: split
    skip: false
    run:
      type: container
      command: [\"docker\", \"run\", \"web:latest\"]
";
        assert_eq!(render(&compat_example()), expected);
    }

    #[test]
    fn services_keep_the_order_they_were_entered_in() {
        let draft = Draft {
            services: ["zeta", "alpha", "mid"]
                .iter()
                .map(|n| (n.to_string(), service(TargetChoice::Targetless, &["x"])))
                .collect(),
            ..Draft::default()
        };
        let yaml = render(&draft);
        let order: Vec<usize> = ["  zeta:", "  alpha:", "  mid:"]
            .iter()
            .map(|k| yaml.find(k).unwrap())
            .collect();
        assert!(order.is_sorted(), "{yaml}");
        assert!(
            !yaml.contains("common:"),
            "all-default common is pruned: {yaml}"
        );
    }

    /// Answers that need quoting in YAML, or would mean something else unquoted.
    fn awkward_draft() -> Draft {
        let mut odd = service(
            TargetChoice::Infer {
                namespace: Some("team: a".into()),
            },
            &[
                "sh",
                "-c",
                "echo \"hi\" # not a comment",
                "[x, y]",
                "yes",
                "1",
            ],
        );
        odd.env = vec![
            ("EMPTY".into(), String::new()),
            ("TRUTHY".into(), "yes".into()),
            ("NUMBER".into(), "0123".into()),
            ("QUOTES".into(), "it's \"quoted\"".into()),
            ("MULTI".into(), "line one\nline two".into()),
            ("HASH".into(), "a #b".into()),
            ("UNICODE".into(), "héllo wörld".into()),
        ];
        odd.header_filter = Some("x-session: {alice}|bob".into());
        odd.ignore_ports = [1, 65535].into();
        let mut replace = service(
            TargetChoice::Path {
                path: "statefulset/db/container/main".into(),
                namespace: None,
            },
            &["./db"],
        );
        replace.mode = Mode::Replace;
        Draft {
            accept_invalid_certificates: Some(true),
            operator: Some(false),
            telemetry: Some(false),
            services: vec![
                // A name that YAML reads as a number unless quoted.
                ("0123".into(), odd),
                ("true".into(), replace),
                (
                    "inferred".into(),
                    service(TargetChoice::Infer { namespace: None }, &["go", "run", "."]),
                ),
            ],
        }
    }

    fn write_and_load(draft: &Draft) -> (tempfile::TempDir, PathBuf, UpDocument) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirrord-up.yaml");
        std::fs::write(&path, render(draft)).unwrap();
        let doc = UpDocument::load(&path, Some("alice"))
            .unwrap_or_else(|e| panic!("{e}\n---\n{}", render(draft)));
        (dir, path, doc)
    }

    #[test]
    fn written_files_load_with_the_same_meaning() {
        for draft in [compat_example(), awkward_draft()] {
            let (_dir, _path, doc) = write_and_load(&draft);
            let file = &doc.file;
            assert_eq!(file.common.operator, draft.operator);
            assert_eq!(
                file.common.accept_invalid_certificates,
                draft.accept_invalid_certificates
            );
            assert_eq!(file.common.telemetry, draft.telemetry);
            assert_eq!(file.services.0.len(), draft.services.len());
            for (name, want) in &draft.services {
                let got = &file.services.0[name];
                assert_eq!(got.run.command, want.command, "{name}");
                assert_eq!(got.run.kind, want.run_type, "{name}");
                assert_eq!(got.default_mode, want.mode, "{name}");
                assert!(!got.skip, "{name}");
                assert_eq!(got.ignore_ports, want.ignore_ports, "{name}");
                assert_eq!(
                    got.http_filter
                        .as_ref()
                        .and_then(|h| h.header_filter.clone()),
                    want.header_filter,
                    "{name}"
                );
                let overrides: Vec<(String, String)> = got
                    .env
                    .as_ref()
                    .and_then(|e| e.overrides.as_ref())
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
                    .unwrap_or_default();
                let mut wanted = want.env.clone();
                wanted.sort();
                assert_eq!(overrides, wanted, "{name}");
                match &want.target {
                    TargetChoice::Targetless => assert_eq!(got.target, TargetConfig::None),
                    TargetChoice::Infer { namespace } => {
                        assert!(got.target.needs_inference(), "{name}");
                        assert_eq!(got.target.namespace(), namespace.as_deref(), "{name}");
                    }
                    TargetChoice::Path { path, namespace } => {
                        assert_eq!(got.target.path().unwrap().to_string(), *path, "{name}");
                        assert_eq!(got.target.namespace(), namespace.as_deref(), "{name}");
                    }
                }
            }
        }
    }

    #[test]
    fn written_files_pass_check() {
        use clap::Parser as _;
        for draft in [compat_example(), awkward_draft()] {
            let (_dir, path, _doc) = write_and_load(&draft);
            let cli = crate::cli::Cli::parse_from([
                "mirrord-up".as_ref(),
                "-k".as_ref(),
                "alice".as_ref(),
                "-f".as_ref(),
                path.as_os_str(),
                "check".as_ref(),
            ]);
            let ctx = Context::new(cli.global);
            let code = super::super::check::run(&ctx, false).unwrap();
            assert_eq!(code, ExitCode::SUCCESS);
        }
    }

    #[test]
    fn extensions_are_written_as_mirrord_up_reads_them() {
        use crate::config::RestartPolicy;
        let mut db = service(TargetChoice::Targetless, &["./db"]);
        db.extensions = Some(Extensions {
            ready: Ready::Tcp(5432),
            restart: Some("on-failure".into()),
            ..Extensions::default()
        });
        let mut api = service(TargetChoice::Targetless, &["./api"]);
        api.extensions = Some(Extensions {
            depends_on: vec!["1.5".into()],
            ready: Ready::Log(r"listening on :\d+ #1".into()),
            restart: Some("always".into()),
        });
        let mut web = service(TargetChoice::Targetless, &["./web"]);
        web.extensions = Some(Extensions {
            ready: Ready::Http("http://localhost:3000/health".into()),
            ..Extensions::default()
        });
        let draft = Draft {
            services: vec![("1.5".into(), db), ("api".into(), api), ("web".into(), web)],
            ..Draft::default()
        };
        let (_dir, _path, doc) = write_and_load(&draft);
        let svc = |n: &str| &doc.file.services.0[n];
        assert_eq!(svc("1.5").restart, RestartPolicy::OnFailure);
        assert_eq!(svc("1.5").ready.as_ref().unwrap().tcp, Some(5432));
        assert_eq!(svc("api").restart, RestartPolicy::Always);
        assert_eq!(svc("api").depends_on.0.keys().collect::<Vec<_>>(), ["1.5"]);
        assert_eq!(
            svc("api").ready.as_ref().unwrap().log.as_deref(),
            Some(r"listening on :\d+ #1")
        );
        assert_eq!(
            svc("web").ready.as_ref().unwrap().http.as_deref(),
            Some("http://localhost:3000/health")
        );
        assert_eq!(svc("web").restart, RestartPolicy::No);
        assert!(svc("web").depends_on.0.is_empty());
    }

    #[test]
    fn depends_on_names_only_services_above() {
        let earlier = vec!["db".to_string(), "api".to_string()];
        assert_eq!(
            parse_depends_on(" api, db ,api,", &earlier).unwrap(),
            ["api", "db"]
        );
        assert!(parse_depends_on("", &earlier).unwrap().is_empty());
        let err = parse_depends_on("api, cache", &earlier).unwrap_err();
        assert!(err.contains("`cache`"), "{err}");
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert_eq!(parse_port(" 8080 "), Ok(8080));
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_command(r#"sh -c "echo hi""#, RunType::Exec).unwrap(),
            ["sh", "-c", "echo hi"]
        );
        assert_eq!(
            split_command(r"node app.js --name it\'s", RunType::Exec).unwrap(),
            ["node", "app.js", "--name", "it's"]
        );
        let err = split_command(r#"sh -c "echo hi"#, RunType::Exec).unwrap_err();
        assert!(err.contains("unbalanced quote"), "{err}");
        assert!(split_command("   ", RunType::Exec).is_err());
        assert!(split_command("podman run -p 80:80 web", RunType::Container).is_ok());
        assert!(split_command("docker build .", RunType::Container).is_err());
        assert!(split_command("./server", RunType::Container).is_err());
    }

    #[test]
    fn validators_use_the_real_messages() {
        let taken = vec!["api".to_string()];
        assert_eq!(
            check_service_name("  ", &taken).unwrap_err(),
            "name cannot be empty"
        );
        assert_eq!(
            check_service_name(" api ", &taken).unwrap_err(),
            "a service with that name already exists"
        );
        assert!(check_service_name("web", &taken).is_ok());
        assert_eq!(parse_ports("9090, ,15090").unwrap(), [9090, 15090].into());
        assert_eq!(
            parse_ports("80,70000").unwrap_err(),
            "`70000` is not a valid u16 port"
        );
        assert!(parse_ports("0").is_err());
        assert!(check_service_name("a/b", &taken).is_err());
    }

    #[test]
    fn target_paths_are_checked_for_the_mode() {
        assert!(check_target_path("deployment/api/container/app", Mode::Split).is_ok());
        assert!(check_target_path("pod/api", Mode::Split).is_ok());
        assert!(check_target_path("bogus/x", Mode::Split).is_err());
        assert!(check_target_path("targetless", Mode::Split).is_err());
        let err = check_target_path("pod/api", Mode::Replace).unwrap_err();
        assert!(err.contains("pod target"), "{err}");
        assert!(check_target_path("statefulset/db", Mode::Replace).is_ok());
    }
}
