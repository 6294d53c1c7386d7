//! Reading `mirrord-up.yaml`: render (Tera) → parse (serde_yaml) → validate, with every error
//! carrying the file, the key path and the line and column.

pub mod locate;
pub mod model;
pub mod target;
pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::Location;
pub use model::*;
pub use target::{TargetConfig, TargetPath};

/// Everything that can be wrong with the file, each naming the file and, where it can, the place.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: mirrord-up.yaml file not found.\n  Create one with `mirrord-up init`, or pass its path with `-f <file-path.yaml>`.",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}",
        located(
            path,
            "failed to template with tera",
            key_path,
            message,
            location,
            snippet
        )
    )]
    Template {
        path: PathBuf,
        key_path: String,
        message: String,
        location: Option<Location>,
        snippet: Option<String>,
    },
    #[error(
        "{}",
        located(
            path,
            "failed to parse mirrord-up config",
            key_path,
            message,
            location,
            snippet
        )
    )]
    Parse {
        path: PathBuf,
        /// Only for YAML syntax errors (serde's messages carry their own path).
        key_path: String,
        message: String,
        location: Option<Location>,
        snippet: Option<String>,
    },
    #[error(
        "{}",
        located(
            path,
            "invalid mirrord-up config",
            key_path,
            message,
            location,
            snippet
        )
    )]
    Invalid {
        path: PathBuf,
        key_path: String,
        message: String,
        location: Option<Location>,
        snippet: Option<String>,
    },
    #[error("{}: unknown service(s): {}\n  Available services: {}", path.display(), unknown.join(", "), available.join(", "))]
    UnknownServices {
        path: PathBuf,
        unknown: Vec<String>,
        available: Vec<String>,
    },
    #[error("{}: no services to launch: every service is marked `skip: true`", path.display())]
    AllSkipped { path: PathBuf },
    #[error("{}: incompatible mode and target: {}", path.display(), details.join("; "))]
    IncompatibleTargets { path: PathBuf, details: Vec<String> },
    /// Targets that could not be inferred: one line per service.
    #[error("{}", inference_lines(path, failures))]
    Inference {
        path: PathBuf,
        /// (service, why)
        failures: Vec<(String, String)>,
    },
    #[error("failed to acquire OS username for key (pass one with `--key`)")]
    UsernameFetch,
}

/// `F: services.api.target: why`, or for several services a heading and one indented line each.
fn inference_lines(path: &Path, failures: &[(String, String)]) -> String {
    match failures {
        [(service, message)] => format!("{}: services.{service}.target: {message}", path.display()),
        many => {
            let mut out = format!(
                "{}: cannot infer the target of {} services:",
                path.display(),
                many.len()
            );
            for (service, message) in many {
                out.push_str(&format!("\n  services.{service}.target: {message}"));
            }
            out
        }
    }
}

fn located(
    path: &Path,
    what: &str,
    key_path: &str,
    message: &str,
    location: &Option<Location>,
    snippet: &Option<String>,
) -> String {
    let mut out = format!("{what}: ");
    if !key_path.is_empty() {
        out.push_str(key_path);
        out.push_str(": ");
    }
    out.push_str(message);
    if let Some(loc) = location {
        if !message.contains(" at line ") {
            out.push_str(&format!(" at {loc}"));
        }
        out.push_str(&format!(
            "\n --> {}:{}:{}",
            path.display(),
            loc.line,
            loc.column
        ));
        if let Some(line) = snippet {
            let n = loc.line.to_string();
            let pad = " ".repeat(n.len());
            out.push_str(&format!(
                "\n{pad} |\n{n} | {line}\n{pad} | {}^",
                " ".repeat(loc.column.saturating_sub(1))
            ));
        }
    } else {
        out.push_str(&format!("\n --> {}", path.display()));
    }
    out
}

fn snippet(text: &str, loc: Option<Location>) -> Option<String> {
    loc.and_then(|l| text.lines().nth(l.line.saturating_sub(1)))
        .map(str::to_owned)
}

/// A rendered, parsed and validated `mirrord-up.yaml`.
#[derive(Debug, Clone)]
pub struct UpDocument {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Its directory: relative paths in the file and commands' working directory start here.
    pub dir: PathBuf,
    /// The text after templating (what line numbers refer to).
    pub rendered: String,
    pub file: UpFile,
    /// The session key the file was rendered with.
    pub key: String,
    /// Contents of `env_file`s, by service, read once at load time.
    pub env_files: BTreeMap<String, BTreeMap<String, String>>,
    /// Contents of `config` base files, by service.
    pub base_configs: BTreeMap<String, serde_json::Value>,
}

/// The session key: `--key`, else the OS user name (as real mirrord).
pub fn session_key(explicit: Option<&str>) -> Result<String, ConfigError> {
    if let Some(k) = explicit {
        return Ok(k.to_owned());
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        .ok_or(ConfigError::UsernameFetch)
}

impl UpDocument {
    /// Reads, renders, parses and validates `path`.
    pub fn load(path: &Path, key: Option<&str>) -> Result<UpDocument, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let source = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound { path });
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let key = session_key(key)?;
        Self::from_source(path, dir, &source, key)
    }

    fn from_source(
        path: PathBuf,
        dir: PathBuf,
        source: &str,
        key: String,
    ) -> Result<UpDocument, ConfigError> {
        let rendered = template::render(source, &key, &dir).map_err(|e| ConfigError::Template {
            key_path: e
                .location
                .map(|l| locate::path_at_line(source, l.line))
                .unwrap_or_default(),
            snippet: snippet(source, e.location),
            location: e.location,
            message: e.message,
            path: path.clone(),
        })?;
        let file: UpFile = serde_yaml::from_str(&rendered).map_err(|e| {
            let message = e.to_string();
            let dup = regex::Regex::new(r"duplicate service `([^`]+)`").expect("static");
            let location = match dup.captures(&message) {
                // serde reports the map's start; point at the second occurrence instead.
                Some(c) => locate::locate_nth(&rendered, &["services", &c[1]], 1),
                None => None,
            }
            .or(e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            }));
            // A syntax error comes from the scanner, before any key is known: name the key
            // that encloses its line.
            let syntax = regex::Regex::new(
                r"while (parsing|scanning)|did not find expected|found unexpected|mapping values are not allowed|found character",
            )
            .expect("static");
            let key_path = match location {
                Some(l) if syntax.is_match(&message) => locate::path_at_line(&rendered, l.line),
                _ => String::new(),
            };
            ConfigError::Parse {
                key_path,
                message: match location {
                    Some(l) if dup.is_match(&message) => {
                        format!(
                            "{} at {l}",
                            message.split(" at line ").next().unwrap_or(&message)
                        )
                    }
                    _ => message,
                },
                snippet: snippet(&rendered, location),
                location,
                path: path.clone(),
            }
        })?;
        let mut doc = UpDocument {
            path,
            dir,
            rendered,
            file,
            key,
            env_files: BTreeMap::new(),
            base_configs: BTreeMap::new(),
        };
        doc.validate()?;
        Ok(doc)
    }

    /// An error at `services.<...>`, located in the rendered text.
    pub fn invalid(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        let location = locate::locate(&self.rendered, key_path);
        ConfigError::Invalid {
            path: self.path.clone(),
            key_path: key_path.join("."),
            message: message.into(),
            snippet: snippet(&self.rendered, location),
            location,
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let services = &self.file.services.0;
        if services.is_empty() {
            return Err(self.invalid(&["services"], "no services defined (`services` is empty)"));
        }
        for (name, svc) in services {
            for dep in svc.depends_on.0.keys() {
                if !services.contains_key(dep) {
                    let known: Vec<&str> = services.keys().map(String::as_str).collect();
                    return Err(self.invalid(
                        &["services", name, "depends_on"],
                        format!(
                            "unknown service `{dep}` (services in this file: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
            if let Some(r) = &svc.ready {
                let probes = [r.log.is_some(), r.tcp.is_some(), r.http.is_some()];
                if probes.iter().filter(|p| **p).count() > 1 {
                    return Err(self.invalid(
                        &["services", name, "ready"],
                        "give at most one of `log`, `tcp` and `http`",
                    ));
                }
            }
        }
        if let Some(cycle) = crate::graph::find_cycle(services) {
            let first = cycle[0].clone();
            return Err(self.invalid(
                &["services", &first, "depends_on"],
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        self.read_side_files()
    }

    /// Reads `env_file` and `config` files (their contents are part of the config hash).
    fn read_side_files(&mut self) -> Result<(), ConfigError> {
        let mut env_files = BTreeMap::new();
        let mut base_configs = BTreeMap::new();
        for (name, svc) in &self.file.services.0 {
            if let Some(rel) = &svc.env_file {
                let p = self.dir.join(rel);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.invalid(
                        &["services", name, "env_file"],
                        format!("cannot read `{}`: {e}", p.display()),
                    )
                })?;
                let vars = parse_dotenv(&text).map_err(|(line, msg)| {
                    self.invalid(
                        &["services", name, "env_file"],
                        format!("{}:{line}: {msg}", p.display()),
                    )
                })?;
                env_files.insert(name.clone(), vars);
            }
            if let Some(rel) = &svc.config {
                let p = self.dir.join(rel);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.invalid(
                        &["services", name, "config"],
                        format!("cannot read `{}`: {e}", p.display()),
                    )
                })?;
                let value: serde_json::Value =
                    if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                        serde_yaml::from_str(&text).map_err(|e| e.to_string())
                    } else {
                        serde_json::from_str(&text).map_err(|e| e.to_string())
                    }
                    .map_err(|e| {
                        self.invalid(
                            &["services", name, "config"],
                            format!("`{}` is not a valid mirrord config: {e}", p.display()),
                        )
                    })?;
                if !value.is_object() {
                    return Err(self.invalid(
                        &["services", name, "config"],
                        format!("`{}` must hold a JSON object", p.display()),
                    ));
                }
                base_configs.insert(name.clone(), value);
            }
        }
        self.env_files = env_files;
        self.base_configs = base_configs;
        Ok(())
    }

    /// The files besides the YAML whose content is part of some service's config (`env_file`,
    /// `config`): the supervisor watches them too.
    pub fn side_files(&self) -> Vec<PathBuf> {
        self.file
            .services
            .0
            .values()
            .flat_map(|svc| [svc.env_file.as_ref(), svc.config.as_ref()])
            .flatten()
            .map(|rel| self.dir.join(rel))
            .collect()
    }

    /// Service names in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        self.file.services.0.keys().cloned().collect()
    }
}

/// A dotenv file: `KEY=VALUE` lines, `export ` prefixes, `#` comments, optional quotes.
pub fn parse_dotenv(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| (i + 1, format!("expected KEY=VALUE, found `{line}`")))?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((i + 1, format!("invalid variable name `{k}`")));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v[1..v.len() - 1].to_owned()
        } else {
            v.split(" #").next().unwrap_or(v).trim_end().to_owned()
        };
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

impl fmt::Display for UpDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<UpDocument, ConfigError> {
        UpDocument::from_source(
            PathBuf::from("/x/mirrord-up.yaml"),
            PathBuf::from("/x"),
            text,
            "alice".into(),
        )
    }

    #[test]
    fn unknown_service_key_names_path_and_position() {
        let err = load("services:\n  a:\n    comand: [x]\n    run: {command: [x]}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("services.a: unknown field `comand`, expected one of"),
            "{err}"
        );
        assert!(err.contains("line 3 column 5"), "{err}");
        assert!(err.contains("/x/mirrord-up.yaml:3:5"), "{err}");
    }

    #[test]
    fn duplicate_services_are_refused() {
        let err = load("services:\n  a:\n    run: {command: [x]}\n  a:\n    run: {command: [y]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate service `a`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn empty_command_is_refused() {
        let err = load("services:\n  a:\n    run: {command: []}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("services.a.run.command"), "{err}");
    }

    #[test]
    fn unknown_dependency_is_located() {
        let err = load("services:\n  a:\n    run: {command: [x]}\n    depends_on: [nope]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("services.a.depends_on: unknown service `nope`"),
            "{err}"
        );
        assert!(err.contains("line 4 column 5"), "{err}");
    }

    #[test]
    fn cycles_are_named() {
        let err = load(
            "services:\n  a:\n    run: {command: [x]}\n    depends_on: [b]\n  b:\n    run: {command: [x]}\n    depends_on: [a]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dependency cycle: a -> b -> a"), "{err}");
    }

    #[test]
    fn empty_services_says_so() {
        let err = load("services: {}\n").unwrap_err().to_string();
        assert!(err.contains("no services defined"), "{err}");
    }

    #[test]
    fn dotenv_forms() {
        let vars = parse_dotenv("# c\nA=1\nexport B=\"two words\"\nC='x' \nD=y # note\n").unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x");
        assert_eq!(vars["D"], "y");
        assert!(parse_dotenv("oops\n").is_err());
    }
}
