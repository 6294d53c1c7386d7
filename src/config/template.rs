//! Tera rendering of the whole file, as real `mirrord up` does (compat §1.11).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::MAX_FILE_BYTES;
use super::locate::Location;

/// A template failure: Tera's message chain and, where it can be found, where in the source.
#[derive(Debug)]
pub struct TemplateError {
    pub message: String,
    pub location: Option<Location>,
}

/// How long one rendering may take, wall clock.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// The renderer's address space (`RLIMIT_AS`).
pub const RENDER_MEMORY: u64 = 256 << 20;
/// The stack of the rendering thread (and the renderer's `RLIMIT_STACK`).
pub const RENDER_STACK: usize = 8 << 20;
/// CPU seconds (`RLIMIT_CPU`): a backstop for a renderer whose parent died.
const RENDER_CPU_SECS: u64 = 3;
/// The most the parent reads back (the rendered text is at most `MAX_FILE_BYTES`, and JSON
/// escaping can grow it up to six times).
const MAX_REPLY_BYTES: u64 = 7 * MAX_FILE_BYTES + 4096;
const MAX_STDERR_BYTES: u64 = 64 << 10;

/// The hidden subcommand the binary runs itself with to render a template.
pub const RENDER_SUBCOMMAND: &str = "__render";

/// What the parent hands the renderer on its stdin.
#[derive(Debug, Serialize, Deserialize)]
struct RenderInput {
    source: String,
    key: String,
    git_branch: Option<String>,
}

/// What the renderer answers on its stdout.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Ok(String),
    Err {
        message: String,
        location: Option<Location>,
    },
}

/// Whether Tera would see anything but plain text.
pub fn has_tags(source: &str) -> bool {
    source.contains("{{") || source.contains("{%") || source.contains("{#")
}

/// Renders `source` as the single Tera template `main`, with `key` and (when known) `git_branch`.
///
/// A file without `{{`, `{%` or `{#` is plain text to Tera and is returned as is. Anything else
/// is rendered by a child process (this binary's hidden `__render`) under limits: a template
/// can loop without end, recurse without end or allocate without end, and none of that may
/// reach the caller (the supervisor renders every saved version of the file while it holds the
/// state lock). The child gets [`RENDER_TIMEOUT`] of wall-clock time, [`RENDER_MEMORY`] of
/// address space and a [`RENDER_STACK`] stack; the error says which limit was hit.
pub fn render(source: &str, key: &str, dir: &Path) -> Result<String, TemplateError> {
    if !has_tags(source) {
        return Ok(source.to_owned());
    }
    // Asking git costs a process start: only when the file can refer to the branch.
    let git_branch = source
        .contains("git_branch")
        .then(|| git_branch(dir).map(str::to_owned))
        .flatten();
    let input = RenderInput {
        source: source.to_owned(),
        key: key.to_owned(),
        git_branch,
    };
    match renderer() {
        Ok(exe) => render_in_child(&exe, &input),
        Err(()) if cfg!(test) => render_here(&input),
        Err(()) => Err(TemplateError {
            message: "cannot find the mirrord-up binary to render the template with".into(),
            location: None,
        }),
    }
}

static RENDERER: OnceLock<PathBuf> = OnceLock::new();

/// Use `exe` (a mirrord-up binary) to render templates: for tests that load files in-process,
/// where the current executable is the test harness.
pub fn set_renderer(exe: &Path) {
    let _ = RENDERER.set(exe.to_owned());
}

/// This binary when it is mirrord-up (by `/proc/self/exe`, which still works once an upgrade
/// replaced the file), else a `mirrord-up` next to it or one level up (a test harness in
/// `target/*/deps`). Library unit tests render in-process.
fn renderer() -> Result<PathBuf, ()> {
    if let Some(exe) = RENDERER.get() {
        return Ok(exe.clone());
    }
    if cfg!(test) {
        return Err(());
    }
    let me = std::env::current_exe().map_err(drop)?;
    let name = me.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == "mirrord-up" || name.starts_with("mirrord-up ") {
        let proc_exe = Path::new("/proc/self/exe");
        return Ok(if proc_exe.exists() {
            proc_exe.to_owned()
        } else {
            me
        });
    }
    let dir = me.parent().ok_or(())?;
    [dir.join("mirrord-up"), dir.join("../mirrord-up")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(())
}

fn limit_error(message: impl Into<String>) -> TemplateError {
    TemplateError {
        message: message.into(),
        location: None,
    }
}

fn render_in_child(exe: &Path, input: &RenderInput) -> Result<String, TemplateError> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .arg(RENDER_SUBCOMMAND)
        // A backtrace of a renderer out of memory takes seconds to print: none.
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LIB_BACKTRACE")
        // The allocator (mimalloc, src/main.rs) reserves its address space 1 GiB at a time:
        // under the renderer's `RLIMIT_AS` it reserves a little at a time, so that the limit
        // bounds what the template allocates.
        .env("MIMALLOC_ARENA_RESERVE", "8MiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            limit_error(format!(
                "cannot start the template renderer `{}`: {e}",
                exe.display()
            ))
        })?;
    let payload = serde_json::to_vec(input).expect("strings serialize");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let writer = std::thread::spawn(move || {
        // A renderer that died early must not kill us with SIGPIPE (its default disposition
        // is restored in `main`): block it in this thread, so that the write says EPIPE.
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        let _ = pipe.thread_block();
        let _ = stdin.write_all(&payload);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_REPLY_BYTES + 1)
            .read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    let errors = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(MAX_STDERR_BYTES).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    // The renderer's stdout ends when it exits: wait for that, or kill it at the deadline.
    let reply = rx.recv_timeout(RENDER_TIMEOUT).ok();
    let too_long = reply
        .as_ref()
        .is_some_and(|r| r.len() as u64 > MAX_REPLY_BYTES);
    if reply.is_none() || too_long {
        let _ = child.kill();
    }
    let status = crate::process::wait_helper(&mut child);
    let _ = writer.join();
    // The child is gone: its stderr has ended.
    let stderr = errors.join().unwrap_or_default();
    let Some(reply) = reply else {
        return Err(limit_error(format!(
            "template rendering exceeded {} s (the time limit: a loop that is too long or never ends?)",
            RENDER_TIMEOUT.as_secs()
        )));
    };
    if too_long {
        return Err(limit_error(format!(
            "template rendering produced more than {MAX_FILE_BYTES} bytes (1 MiB, the size limit of mirrord-up.yaml)"
        )));
    }
    let ok = status.as_ref().is_ok_and(|s| s.success());
    if ok && let Ok(reply) = serde_json::from_slice::<Reply>(&reply) {
        return match reply {
            Reply::Ok(text) => Ok(text),
            Reply::Err { message, location } => Err(TemplateError { message, location }),
        };
    }
    Err(limit_error(classify(status.ok(), &stderr)))
}

/// Which limit a renderer that died without answering ran into, from how it died.
fn classify(status: Option<std::process::ExitStatus>, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    if stderr.contains("overflowed its stack") {
        return format!(
            "template rendering exceeded the stack limit ({} MiB: a macro that calls itself without end?)",
            RENDER_STACK >> 20
        );
    }
    if stderr.contains("memory allocation of") || stderr.contains("capacity overflow") {
        return format!(
            "template rendering exceeded the memory limit ({} MiB: a `range` or a string that is too large?)",
            RENDER_MEMORY >> 20
        );
    }
    let signal = status.and_then(|s| s.signal());
    if signal == Some(nix::libc::SIGXCPU) || signal == Some(nix::libc::SIGKILL) {
        return format!(
            "template rendering exceeded {RENDER_CPU_SECS} s of CPU time (the time limit: a loop that is too long or never ends?)"
        );
    }
    match status {
        Some(s) => format!("the template renderer failed ({s})"),
        None => "the template renderer failed".into(),
    }
}

/// The renderer: `mirrord-up __render`, template and context on stdin, the answer on stdout.
/// Sets its own limits first, renders on a thread of a known stack size, and answers once.
pub fn child_main() -> std::process::ExitCode {
    use std::io::{Read, Write};
    set_limits();
    let panic_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = panic_text.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut t) = seen.lock() {
            *t = text;
        }
    }));
    let mut bytes = Vec::new();
    let read = std::io::stdin()
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut bytes);
    let reply = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<RenderInput>(&bytes).map_err(|e| e.to_string()))
    {
        Err(e) => Reply::Err {
            message: format!("the template renderer got no template: {e}"),
            location: None,
        },
        Ok(input) => {
            let rendered = std::thread::Builder::new()
                .name("render".into())
                .stack_size(RENDER_STACK)
                .spawn(move || render_here(&input))
                .map(|h| h.join());
            match rendered {
                Ok(Ok(Ok(text))) if text.len() as u64 > MAX_FILE_BYTES => Reply::Err {
                    message: format!(
                        "template rendering produced {} bytes, more than {MAX_FILE_BYTES} (1 MiB, the size limit of mirrord-up.yaml)",
                        text.len()
                    ),
                    location: None,
                },
                Ok(Ok(Ok(text))) => Reply::Ok(text),
                Ok(Ok(Err(e))) => Reply::Err {
                    message: e.message,
                    location: e.location,
                },
                Ok(Err(_)) => {
                    let why = panic_text.lock().map(|t| t.clone()).unwrap_or_default();
                    if why.contains("capacity overflow") {
                        eprintln!("capacity overflow");
                        return std::process::ExitCode::from(3);
                    }
                    Reply::Err {
                        message: format!(
                            "the template engine gave up on this template ({})",
                            super::names::excerpt(&why, 200)
                        ),
                        location: None,
                    }
                }
                Err(e) => Reply::Err {
                    message: format!("the template renderer cannot start a thread: {e}"),
                    location: None,
                },
            }
        }
    };
    let out = serde_json::to_vec(&reply).expect("strings serialize");
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::from(1),
    }
}

/// Lowers (never raises) the renderer's address space, CPU time and stack limits.
fn set_limits() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    for (resource, value) in [
        (Resource::RLIMIT_AS, RENDER_MEMORY),
        (Resource::RLIMIT_CPU, RENDER_CPU_SECS),
        (Resource::RLIMIT_STACK, RENDER_STACK as u64),
    ] {
        if let Ok((soft, hard)) = getrlimit(resource) {
            let hard = hard.min(value + 1);
            let soft = soft.min(value).min(hard);
            let _ = setrlimit(resource, soft, hard);
        }
    }
}

/// Tera itself, in this process.
fn render_here(input: &RenderInput) -> Result<String, TemplateError> {
    let source = input.source.as_str();
    let mut tera = tera::Tera::default();
    if let Err(e) = tera.add_raw_template("main", source) {
        return Err(TemplateError {
            location: parse_error_location(&e),
            message: one_paragraph(&chain(&e)),
        });
    }
    let mut ctx = tera::Context::new();
    ctx.insert("key", &input.key);
    if let Some(branch) = &input.git_branch {
        ctx.insert("git_branch", branch);
    }
    tera.render("main", &ctx).map_err(|e| {
        let message = chain(&e);
        TemplateError {
            location: render_error_location(source, &message),
            message,
        }
    })
}

/// `MIRRORD_BRANCH_NAME` if set and non-empty, else `git branch --show-current` in the YAML's
/// directory; computed once per process, like mirrord's `LazyLock`.
fn git_branch(dir: &Path) -> Option<&'static str> {
    static BRANCH: OnceLock<Option<String>> = OnceLock::new();
    BRANCH
        .get_or_init(|| {
            if let Ok(b) = std::env::var("MIRRORD_BRANCH_NAME")
                && !b.is_empty()
            {
                return Some(b);
            }
            let mut child = std::process::Command::new("git")
                .args(["branch", "--show-current"])
                .current_dir(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
            let ok = crate::process::wait_helper(&mut child).is_ok_and(|s| s.success());
            let b = out.trim().to_owned();
            (ok && !b.is_empty()).then_some(b)
        })
        .as_deref()
}

fn chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Tera's parse errors embed pest's drawing of the source; keep its words only
/// (`Failed to parse 'main': expected …`), since the location is reported separately.
fn one_paragraph(message: &str) -> String {
    let head = message.split(" --> ").next().unwrap_or(message).trim_end();
    match message.lines().find_map(|l| l.trim().strip_prefix("= ")) {
        Some(expected) => format!("{head} {expected}"),
        None => head.to_owned(),
    }
}

/// Tera's parse errors carry pest's ` --> L:C` marker.
fn parse_error_location(e: &tera::Error) -> Option<Location> {
    let text = chain(e);
    let re = regex::Regex::new(r"--> (\d+):(\d+)").expect("static regex");
    let caps = re.captures(&text)?;
    Some(Location {
        line: caps[1].parse().ok()?,
        column: caps[2].parse().ok()?,
    })
}

/// Render errors name a variable or a function but no position: find its first use in a tag.
fn render_error_location(source: &str, message: &str) -> Option<Location> {
    let name_re = regex::Regex::new(r"(?:Variable|Function|Filter) `([^`]+)` not found").ok()?;
    let name = name_re.captures(message)?.get(1)?.as_str().to_owned();
    let use_re =
        regex::Regex::new(&format!(r"\{{[{{%]-?[^}}]*?\b({})\b", regex::escape(&name))).ok()?;
    let m = use_re.captures(source)?.get(1)?;
    Some(Location::of_offset(source, m.start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_builtins_render() {
        let out = render(
            "a: {{ key }}\nb: {{ get_env(name=\"MIRRORD_UP_TEST_UNSET\", default=\"x\") | upper }}\n",
            "alice",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(out, "a: alice\nb: X\n");
    }

    #[test]
    fn comments_are_rendered_too() {
        let err = render("# {% oops\na: 1\n", "k", Path::new(".")).unwrap_err();
        assert!(
            err.message.contains("Failed to parse 'main'"),
            "{}",
            err.message
        );
        assert_eq!(err.location.map(|l| l.line), Some(1));
    }

    #[test]
    fn undefined_variable_is_located() {
        let err = render("a: 1\nb: \"{{ nope }}\"\n", "k", Path::new(".")).unwrap_err();
        assert!(
            err.message.contains("Variable `nope` not found"),
            "{}",
            err.message
        );
        let loc = err.location.unwrap();
        assert_eq!((loc.line, loc.column), (2, 8));
    }
}
