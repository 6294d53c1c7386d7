//! Reading `mirrord-up.yaml`: render (Tera) → parse (serde_yaml) → validate, with every error
//! carrying the file, the key path and the line and column.

mod chunks;
pub mod compose;
pub mod hints;
pub mod locate;
pub mod model;
pub mod names;
pub mod target;
pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How many projects each memo of this process keeps (the parsed services and the resolved
/// services of each file, the last desired state of each tag). A supervisor has one project
/// (a file per `-f`). The test binary parses hundreds of files side by side on several
/// threads: there, nothing is pushed out, so that a test's second load is never a first load
/// because other tests ran meanwhile.
pub(crate) const FILES_REMEMBERED: usize = if cfg!(test) { 4096 } else { 8 };

pub use locate::Location;
pub use model::*;
pub use names::{check_name, escape};

/// The largest `mirrord-up.yaml` read, before and after templating, and the largest `env_file`
/// or `config` file (1 MiB): a bigger file is refused rather than parsed into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How much of a message or of a source line an error shows.
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_SNIPPET_CHARS: usize = 120;
pub use target::{TargetConfig, TargetPath};

/// Everything that can be wrong with the file, each naming the file and, where it can, the place.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{}: mirrord-up.yaml file not found.\n  Create one with `mirrord-up init`, or pass its path with `-f <file-path.yaml>`.",
        path.display()
    )]
    NotFound { path: PathBuf },
    #[error(
        "{}: the file is {size} bytes, more than the {} bytes (1 MiB) mirrord-up reads",
        path.display(), MAX_FILE_BYTES
    )]
    TooLarge { path: PathBuf, size: u64 },
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
    #[error("{}: unknown service(s): {}\n  Available services: {}", path.display(), escaped(unknown), escaped(available))]
    UnknownServices {
        path: PathBuf,
        unknown: Vec<String>,
        available: Vec<String>,
    },
    #[error("{}: no services to launch: every service is marked `skip: true` or has `profiles` none of which is active (`--profile NAME`)", path.display())]
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

fn escaped(names: &[String]) -> String {
    let shown: Vec<_> = names.iter().take(50).map(|n| escape(n)).collect();
    let more = names.len().saturating_sub(shown.len());
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

fn located(
    path: &Path,
    what: &str,
    key_path: &str,
    message: &str,
    location: &Option<Location>,
    snippet: &Option<String>,
) -> String {
    let (message, hint) = match message.split_once(hints::MARKER) {
        Some((m, h)) => (m, Some(h)),
        None => (message, None),
    };
    let mut out = format!("{what}: ");
    if !key_path.is_empty() {
        out.push_str(&escape(key_path));
        out.push_str(": ");
    }
    out.push_str(&escape_lines(&names::excerpt(message, MAX_MESSAGE_BYTES)));
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
            let (line, caret) = window(line, loc.column.saturating_sub(1));
            let n = loc.line.to_string();
            let pad = " ".repeat(n.len());
            out.push_str(&format!(
                "\n{pad} |\n{n} | {line}\n{pad} | {}^",
                " ".repeat(caret)
            ));
        }
    } else {
        out.push_str(&format!("\n --> {}", path.display()));
    }
    if let Some(hint) = hint {
        out.push_str(&format!("\n  hint: {}", escape_lines(hint)));
    }
    out
}

/// Where the key of service `name` is written: by the indentation scan, or, for a quoted key
/// holding escapes (`"a\nb":`), the first line whose quoted key reads as `name`.
fn name_location(text: &str, name: &str) -> Option<Location> {
    let found = locate::locate(text, &["services", name]);
    let on_its_line = found
        .and_then(|l| text.lines().nth(l.line - 1))
        .is_some_and(|line| !name.is_empty() && line.contains(name));
    if on_its_line {
        return found;
    }
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let key = line.trim_start();
            let (quoted, _) = key.rsplit_once(':')?;
            let quoted = quoted.trim_end();
            if !(quoted.starts_with('"') || quoted.starts_with('\'')) {
                return None;
            }
            (serde_yaml::from_str::<String>(quoted).ok()? == name).then_some(Location {
                line: i + 1,
                column: line.len() - key.len() + 1,
            })
        })
        .or(found)
}

/// A message may span lines (Tera's chains do): keep the line breaks, escape the rest.
fn escape_lines(message: &str) -> String {
    message
        .split('\n')
        .map(|l| names::escape_cut(l, MAX_MESSAGE_BYTES).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `MAX_SNIPPET_CHARS` characters of `line` around the (0-based, byte) `column`, escaped,
/// and where the caret goes under it.
fn window(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let at = chars.iter().take_while(|(i, _)| *i < column).count();
    let start = at.saturating_sub(MAX_SNIPPET_CHARS / 2);
    let end = (start + MAX_SNIPPET_CHARS).min(chars.len());
    let clean = |c: char| !c.is_control() || c == '\t';
    let mut out = String::new();
    let mut caret = 0;
    if start > 0 {
        out.push('…');
        caret += 1;
    }
    for (i, (_, c)) in chars[start..end].iter().enumerate() {
        let shown: String = if clean(*c) {
            c.to_string()
        } else {
            c.escape_default().collect()
        };
        if start + i < at {
            caret += shown.chars().count();
        }
        out.push_str(&shown);
    }
    if end < chars.len() {
        out.push('…');
    }
    (out, caret)
}

/// Renders `source` (read from `path`) with Tera; an error names the place in `source`.
fn render_step(path: &Path, dir: &Path, source: &str, key: &str) -> Result<String, ConfigError> {
    template::render(source, key, dir).map_err(|e| ConfigError::Template {
        key_path: e
            .location
            .map(|l| locate::path_at_line(source, l.line))
            .unwrap_or_default(),
        snippet: snippet(source, e.location),
        location: e.location,
        message: match hints::template(&e.message) {
            Some(h) => format!("{}{}{h}", e.message, hints::MARKER),
            None => e.message,
        },
        path: path.to_owned(),
    })
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
    /// Shared: a document is kept and handed out again while the file is unchanged.
    pub rendered: std::sync::Arc<str>,
    /// What is parsed: `rendered` with merge keys applied and `x-*` keys dropped
    /// (`config --yaml`).
    pub resolved: std::sync::Arc<str>,
    /// Shared: the supervisor keeps the document it loaded last and hands out copies of it
    /// every pass (`last_plain`); the parsed services are most of it and never change.
    pub file: std::sync::Arc<UpFile>,
    /// The session key the file was rendered with.
    pub key: String,
    /// Contents of `env_file`s, by service, read once at load time.
    pub env_files: BTreeMap<String, BTreeMap<String, String>>,
    /// Contents of `config` base files, by service.
    pub base_configs: BTreeMap<String, serde_json::Value>,
    /// The active profiles (`--profile`, `MIRRORD_UP_PROFILES`), set by the caller.
    pub profiles: Vec<String>,
    /// Compose-style extensions above the services that real mirrord rejects: top-level
    /// `x-*` keys and YAML merge keys (`<<`), as `check --compat` lists them.
    pub document_extensions: Vec<String>,
    /// With several `-f` files: each file and its rendered text, in merge order (errors are
    /// located in the last file that writes the key). Empty for one file.
    pub sources: Vec<(PathBuf, String)>,
    /// One file without template tags: what it loads to depends on its text, its key and its
    /// side files alone (`desired::last` reuses what it resolved to while none changed).
    pub plain: bool,
}

/// The last plain (tag-free) single file this process loaded: path, key, text, and what it
/// loaded to.
mod last_plain {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::UpDocument;

    type Loaded = (PathBuf, String, String, UpDocument);

    static LAST: Mutex<Option<Loaded>> = Mutex::new(None);

    pub(super) fn get(path: &Path, key: &str, source: &str) -> Option<UpDocument> {
        let last = LAST.lock().ok()?;
        let (p, k, s, doc) = last.as_ref()?;
        (p == path && k == key && s == source).then(|| doc.clone())
    }

    pub(super) fn put(path: PathBuf, key: String, source: String, doc: &UpDocument) {
        if let Ok(mut last) = LAST.lock() {
            *last = Some((path, key, source, doc.clone()));
        }
    }
}

/// The session key: `--key`, else the OS user name (as real mirrord).
pub fn session_key(explicit: Option<&str>) -> Result<String, ConfigError> {
    if let Some(k) = explicit {
        return Ok(k.to_owned());
    }
    // The user database is read once per process and user (the supervisor loads the file
    // every pass; each lookup reads `/etc/passwd` anew).
    static NAMED: std::sync::Mutex<Option<(nix::unistd::Uid, String)>> =
        std::sync::Mutex::new(None);
    let uid = nix::unistd::getuid();
    let known = NAMED.lock().ok().and_then(|n| {
        n.as_ref()
            .filter(|(u, _)| *u == uid)
            .map(|(_, n)| n.clone())
    });
    known
        .or_else(|| {
            let name = nix::unistd::User::from_uid(uid).ok().flatten()?.name;
            if let Ok(mut n) = NAMED.lock() {
                *n = Some((uid, name.clone()));
            }
            Some(name)
        })
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        .ok_or(ConfigError::UsernameFetch)
}

/// The text of the file at `path` (at most the size limit), or why it cannot be had.
fn read_source(path: &Path) -> Result<String, ConfigError> {
    let path = path.to_owned();
    match read_bounded(&path) {
        Ok(s) => Ok(s),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ConfigError::NotFound { path })
        }
        Err(ReadError::Io(source)) => Err(ConfigError::Read { path, source }),
        Err(ReadError::TooLarge(size)) => Err(ConfigError::TooLarge { path, size }),
    }
}

impl UpDocument {
    /// Reads, renders, parses and validates `path`.
    pub fn load(path: &Path, key: Option<&str>) -> Result<UpDocument, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let source = read_source(&path)?;
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let key = session_key(key)?;
        // A file without template tags is used as is: what it parses to depends on its text
        // (and the key) alone, so the text loaded last in this process is not parsed again
        // (the supervisor loads the file in every pass). Its side files are read each time.
        let plain = !template::has_tags(&source);
        if plain && let Some(mut doc) = last_plain::get(&path, &key, &source) {
            doc.read_side_files()?;
            return Ok(doc);
        }
        let mut doc = Self::from_source(path.clone(), dir, &source, key.clone())?;
        doc.plain = plain;
        if plain {
            last_plain::put(path, key, source, &doc);
        }
        Ok(doc)
    }

    /// Reads, renders and parses each of `paths`, merges them in order (compose's rules:
    /// mappings merge, anything else is replaced), and validates the result. The first file's
    /// directory is the project's; an error names the file (and line) it belongs to.
    pub fn load_many(paths: &[PathBuf], key: Option<&str>) -> Result<UpDocument, ConfigError> {
        let key = session_key(key)?;
        let mut sources: Vec<(PathBuf, String)> = Vec::new();
        let mut merged: Option<serde_yaml::Value> = None;
        let mut extensions: Vec<String> = Vec::new();
        for path in paths {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            let source = read_source(&path)?;
            let dir = path.parent().map(Path::to_owned).unwrap_or_default();
            let rendered = render_step(&path, &dir, &source, &key)?;
            let (value, used) = compose::to_value(&rendered).map_err(|e| ConfigError::Parse {
                key_path: match e.location {
                    Some(l) if !e.message.contains("(`<<`)") => {
                        locate::path_at_line(&rendered, l.line)
                    }
                    _ => String::new(),
                },
                snippet: snippet(&rendered, e.location),
                location: e.location,
                message: match hints::parse(&e.message, &rendered, e.location.map(|l| l.line)) {
                    Some(h) => format!("{}{}{h}", e.message, hints::MARKER),
                    None => e.message,
                },
                path: path.clone(),
            })?;
            for u in used {
                if !extensions.contains(&u) {
                    extensions.push(u);
                }
            }
            match &mut merged {
                None => merged = Some(value),
                Some(base) => compose::overlay(base, value),
            }
            sources.push((path, rendered));
        }
        extensions.push(format!("-f given {} times (files merged)", paths.len()));
        let merged = merged.unwrap_or(serde_yaml::Value::Null);
        let text = serde_yaml::to_string(&merged).unwrap_or_default();
        let file: UpFile = serde_yaml::from_str(&text).map_err(|e| {
            let message = compose::without_position(&e);
            let (path, rendered) = sources
                .iter()
                .rev()
                .find(|(_, t)| compose::written_at(t, &message).is_some())
                .unwrap_or(&sources[sources.len() - 1]);
            let location = compose::written_at(rendered, &message);
            ConfigError::Parse {
                key_path: String::new(),
                snippet: snippet(rendered, location),
                location,
                message,
                path: path.clone(),
            }
        })?;
        let (path, _) = sources[0].clone();
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut doc = UpDocument {
            path,
            dir,
            resolved: text.as_str().into(),
            rendered: text.into(),
            file: file.into(),
            key,
            env_files: BTreeMap::new(),
            base_configs: BTreeMap::new(),
            profiles: Vec::new(),
            document_extensions: extensions,
            sources,
            plain: false,
        };
        doc.validate()?;
        Ok(doc)
    }

    /// Renders, parses and validates `source` as if read from `path` (the fuzz tests' door).
    pub fn from_text(path: &Path, source: &str, key: &str) -> Result<UpDocument, ConfigError> {
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        if source.len() as u64 > MAX_FILE_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size: source.len() as u64,
            });
        }
        Self::from_source(path.to_owned(), dir, source, key.to_owned())
    }

    fn from_source(
        path: PathBuf,
        dir: PathBuf,
        source: &str,
        key: String,
    ) -> Result<UpDocument, ConfigError> {
        let rendered: std::sync::Arc<str> = render_step(&path, &dir, source, &key)?.into();
        let parsed = compose::parse(&path, &rendered).map_err(|e| {
            let message = e.message;
            let dup = regex::Regex::new(r"duplicate service `([^`]+)`").expect("static");
            let location = match dup.captures(&message) {
                // serde reports the map's start; point at the second occurrence instead.
                Some(c) => locate::locate_nth(&rendered, &["services", &c[1]], 1),
                None => None,
            }
            .or(e.location);
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
                    _ => match hints::parse(&message, &rendered, location.map(|l| l.line)) {
                        Some(h) => format!("{message}{}{h}", hints::MARKER),
                        None => message,
                    },
                },
                snippet: snippet(&rendered, location),
                location,
                path: path.clone(),
            }
        })?;
        let mut doc = UpDocument {
            path,
            dir,
            resolved: match parsed.resolved {
                Some(r) => r.into(),
                None => rendered.clone(),
            },
            rendered,
            file: parsed.file.into(),
            key,
            env_files: BTreeMap::new(),
            base_configs: BTreeMap::new(),
            profiles: Vec::new(),
            document_extensions: parsed.extensions,
            sources: Vec::new(),
            plain: false,
        };
        doc.validate()?;
        Ok(doc)
    }

    /// An error at `services.<...>`, located in the rendered text.
    pub fn invalid(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        let probe = format!("{}: ", key_path.join("."));
        let (path, text) = self
            .sources
            .iter()
            .rev()
            .find(|(_, t)| compose::written_at(t, &probe).is_some())
            .or(self.sources.last())
            .map_or((&self.path, &*self.rendered), |(p, t)| (p, t.as_str()));
        let location = locate::locate(text, key_path);
        ConfigError::Invalid {
            path: path.clone(),
            key_path: key_path.join("."),
            message: message.into(),
            snippet: snippet(text, location),
            location,
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let services = &self.file.services.0;
        if services.is_empty() {
            return Err(self.invalid(&["services"], "no services defined (`services` is empty)"));
        }
        for name in services.keys() {
            if let Err(why) = check_name(name) {
                // The key path holds the name only once it is known to be printable.
                let location = name_location(&self.rendered, name);
                return Err(ConfigError::Invalid {
                    path: self.path.clone(),
                    key_path: "services".into(),
                    message: why,
                    snippet: snippet(&self.rendered, location),
                    location,
                });
            }
        }
        for (name, svc) in services {
            if let Some(t) = svc.ready.as_ref().and_then(|r| r.timeout)
                && t.0.is_zero()
            {
                return Err(self.invalid(
                    &["services", name, "ready", "timeout"],
                    "must be more than 0 (a duration from 1 ms to 24 h)",
                ));
            }
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
            if let Some(w) = &svc.watch {
                if w.paths.is_empty() {
                    return Err(self.invalid(
                        &["services", name, "watch", "paths"],
                        "give at least one glob of files to watch (e.g. `src/**/*.go`)",
                    ));
                }
                if w.action == WatchAction::Restart && svc.run.kind == RunType::Container {
                    return Err(self.invalid(
                        &["services", name, "watch", "action"],
                        "`action: restart` keeps the session and restarts the app inside it, which `run.type: container` cannot do; use `action: restart-session`",
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
                let text = read_bounded(&p).map_err(|e| {
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
                let text = read_bounded(&p).map_err(|e| {
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

/// Why a file could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("the file is {0} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) mirrord-up reads")]
    TooLarge(u64),
}

/// Reads a UTF-8 file of at most `MAX_FILE_BYTES`, never holding more than one byte past it
/// (a FIFO or `/dev/zero` included).
pub fn read_bounded(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    // Room for the whole file at once (and one byte more, to see that it ended): no doubling.
    let size = file.metadata().map_or(0, |m| m.len().min(MAX_FILE_BYTES));
    let mut bytes = Vec::with_capacity(size as usize + 1);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .ok()
            .filter(|n| *n > MAX_FILE_BYTES)
            .unwrap_or(bytes.len() as u64);
        return Err(ReadError::TooLarge(size));
    }
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        ))
    })
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
    fn a_plain_file_loaded_again_sees_every_change_to_it_and_to_its_side_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("mirrord-up.yaml");
        let env = dir.path().join("a.env");
        let text = |cmd: &str| {
            format!("services:\n  a:\n    env_file: a.env\n    run: {{command: [{cmd}]}}\n")
        };
        std::fs::write(&yaml, text("x")).unwrap();
        std::fs::write(&env, "V=1\n").unwrap();
        let vars = |d: &UpDocument| d.env_files["a"]["V"].clone();
        let first = UpDocument::load(&yaml, Some("k")).unwrap();
        assert_eq!(vars(&first), "1");
        // The same text again (parsed once): the side file is read again.
        std::fs::write(&env, "V=2\n").unwrap();
        let again = UpDocument::load(&yaml, Some("k")).unwrap();
        assert_eq!(vars(&again), "2");
        assert_eq!(again.rendered, first.rendered);
        // A broken side file fails the load, as it does on a first load.
        std::fs::write(&env, "not a line\n").unwrap();
        assert!(UpDocument::load(&yaml, Some("k")).is_err());
        std::fs::write(&env, "V=3\n").unwrap();
        // Another text, another key: parsed anew.
        std::fs::write(&yaml, text("y")).unwrap();
        let changed = UpDocument::load(&yaml, Some("k")).unwrap();
        assert_eq!(changed.file.services.0["a"].run.command, ["y"]);
        assert_eq!(vars(&changed), "3");
        assert_eq!(UpDocument::load(&yaml, Some("other")).unwrap().key, "other");
        // Broken text is an error, not the last good document.
        std::fs::write(&yaml, "services: [").unwrap();
        assert!(UpDocument::load(&yaml, Some("k")).is_err());
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
