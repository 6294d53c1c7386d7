//! Durations in seconds as the options and environment variables take them. Below the CLI:
//! the CLI checks them when a command starts, target inference reads its variable itself.

/// The longest duration any option or variable takes: 24 hours.
pub const MAX_SECS: f64 = 86_400.0;

/// Seconds, as the time options (`-t`, `--wait-timeout`) and `MIRRORD_UP_LOCK_TIMEOUT` take
/// them: a decimal number from 0 to 86400 (24 h). `inf`, `NaN`, negative and larger values are
/// refused here rather than overflowing a `Duration` later.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let range = "a number of seconds from 0 to 86400 (24 h)";
    let shown = crate::config::names::excerpt(s, 40);
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not {range}", crate::config::escape(&shown)))?;
    if !v.is_finite() || !(0.0..=MAX_SECS).contains(&v) {
        return Err(format!(
            "`{}` is out of range: expected {range}",
            crate::config::escape(&shown)
        ));
    }
    Ok(v)
}

/// `MIRRORD_UP_LOCK_TIMEOUT`, checked before any command runs (unset or empty: 60 s).
/// A number of seconds from the environment variable `var` (`MIRRORD_UP_LOCK_TIMEOUT`,
/// `MIRRORD_UP_KUBE_TIMEOUT`): unset or empty is `None`; anything but 0–86400 is an error.
pub fn secs_env(var: &str) -> Result<Option<f64>, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => parse_secs(&v).map(Some).map_err(|e| format!("{var}: {e}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{var}: not a number of seconds (not UTF-8)"))
        }
    }
}
