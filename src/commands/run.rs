//! `run SERVICE [--service-ports] [-e K=V…] -- CMD…` (compose `run`, issue 13.4): runs CMD
//! attached to this terminal (stdin, stdout and stderr inherited) under `mirrord exec` with
//! SERVICE's generated mirrord configuration (target, env, context, key: the same
//! `generate`/`handover` path as the service's own start), and exits with CMD's status. By
//! default the incoming mode is `off`, so it never takes traffic from the running service;
//! `--service-ports` keeps the service's incoming configuration. It needs no running project
//! and never touches the running service (no state change, no markers: `down` does not see it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::Context;
use crate::spec::LauncherKind;

pub struct Options<'a> {
    pub service: &'a str,
    pub service_ports: bool,
    pub env: &'a [String],
    pub command: &'a [String],
}

/// The service's config for a one-off run: incoming off unless `service_ports`, `-e` values
/// over the service's `env.override`.
pub fn run_config(service_config: &Value, service_ports: bool, env: &[(String, String)]) -> Value {
    let mut config = service_config.clone();
    if !config.is_object() {
        config = json!({});
    }
    if !service_ports {
        let feature = config
            .as_object_mut()
            .expect("object")
            .entry("feature")
            .or_insert_with(|| json!({}));
        if let Some(f) = feature.as_object_mut() {
            let network = f.entry("network").or_insert_with(|| json!({}));
            if let Some(n) = network.as_object_mut() {
                n.insert("incoming".into(), json!({ "mode": "off" }));
            }
        }
    }
    if !env.is_empty() {
        let root = config.as_object_mut().expect("object");
        let feature = root.entry("feature").or_insert_with(|| json!({}));
        if let Some(f) = feature.as_object_mut() {
            let e = f.entry("env").or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            if let Some(e) = e.as_object_mut() {
                let o = e.entry("override").or_insert_with(|| json!({}));
                if !o.is_object() {
                    *o = json!({});
                }
                if let Some(o) = o.as_object_mut() {
                    for (k, v) in env {
                        o.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
        }
    }
    config
}

fn parse_env(pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
                Ok((k.to_owned(), v.to_owned()))
            }
            _ => bail!("-e {}: expected NAME=VALUE", crate::config::escape(p)),
        })
        .collect()
}

pub fn run(ctx: &Context, opts: &Options) -> Result<ExitCode> {
    let env = parse_env(opts.env)?;
    let Some((program, args)) = opts.command.split_first() else {
        bail!("nothing to run: give a command after `--` (`mirrord-up run api -- psql`)");
    };
    let doc = ctx.load()?;
    let names = doc.names();
    if !names.iter().any(|n| n == opts.service) {
        bail!(
            "no service `{}` in {} (services: {})",
            crate::config::escape(opts.service),
            doc.path.display(),
            names.join(", ")
        );
    }
    let cache = ctx
        .read_state()
        .ok()
        .flatten()
        .map(|s| s.target_cache)
        .unwrap_or_default();
    let (desired, _) = ctx.desired(&doc, &[opts.service.to_owned()], None, cache)?;
    let spec = desired
        .services
        .iter()
        .find(|s| s.name == opts.service)
        .with_context(|| format!("service `{}` is not selectable", opts.service))?;

    let mut command = match spec.launcher {
        LauncherKind::Local => {
            let mut c = std::process::Command::new(program);
            c.args(args)
                .envs(spec.env_overrides())
                .envs(env.iter().cloned());
            c
        }
        LauncherKind::Mirrord => {
            let bin = ctx.mirrord_bin()?;
            let config = run_config(&spec.mirrord_config, opts.service_ports, &env);
            let store = ctx.store()?;
            let dir = store.service_dir(&spec.name);
            crate::fsutil::check_dir(&dir, true)?;
            let path = dir.join(format!("run-{}.json", std::process::id()));
            crate::state::write_private(&path, &serde_json::to_vec_pretty(&config)?)?;
            let _cleanup = RemoveOnDrop(path.clone());
            let mut c = std::process::Command::new(&bin);
            c.arg("exec");
            match crate::handover::prepare(&bin, &path, &config).map_err(anyhow::Error::msg)? {
                crate::handover::Handover::Resolved { encoded } => {
                    c.env("MIRRORD_UP_RESOLVED_CONFIG", encoded);
                }
                crate::handover::Handover::File { version } => {
                    if let Some(notice) = crate::handover::fallback_notice(version.as_deref()) {
                        eprintln!("{notice}");
                    }
                    c.env("MIRRORD_CLI_STRICT_ENV", "true").arg("-f").arg(&path);
                }
            }
            c.arg("--").arg(program).args(args);
            return wait(c.current_dir(&spec.working_dir), &bin);
        }
    };
    let program = PathBuf::from(program);
    wait(command.current_dir(&spec.working_dir), &program)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `command` in the foreground and returns its status: its exit code, or 128 + the
/// signal. Ctrl-C reaches it through the terminal's process group; we wait for its end.
fn wait(command: &mut std::process::Command, program: &std::path::Path) -> Result<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{}`", program.display()))?;
    // The terminal's SIGINT/SIGQUIT are the child's to handle: we only report its status.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety requirement.
    unsafe {
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGQUIT,
        ] {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    let status = child.wait()?;
    Ok(crate::error::child_exit_code(
        status.code(),
        status.signal(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_is_off_unless_service_ports_and_env_wins() {
        let service = json!({"target": {"path": "deployment/api"}, "feature": {
            "network": {"incoming": {"mode": "steal", "http_filter": {"header_filter": "x"}}},
            "env": {"override": {"FOO": "a", "BAR": "b"}}}});
        let env = vec![("FOO".to_owned(), "z".to_owned())];
        let off = run_config(&service, false, &env);
        assert_eq!(
            off["feature"]["network"]["incoming"],
            json!({"mode": "off"})
        );
        assert_eq!(off["feature"]["env"]["override"]["FOO"], "z");
        assert_eq!(off["feature"]["env"]["override"]["BAR"], "b");
        assert_eq!(off["target"], service["target"]);
        let kept = run_config(&service, true, &[]);
        assert_eq!(kept, service);
        assert!(parse_env(&["X".into()]).is_err());
        assert_eq!(
            parse_env(&["X=1=2".into()]).unwrap(),
            [("X".to_owned(), "1=2".to_owned())]
        );
    }
}
