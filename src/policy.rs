//! The restart policy (README: "Live loop"): what happens to a service whose process ended. Pure: the
//! caller supplies the exit, the uptime and the streak; no clock, no processes.

use std::time::Duration;

use crate::config::RestartPolicy;

/// First back-off delay; it doubles with every restart in a row.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// The back-off never grows past this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that stayed up this long ends the streak: its next crash starts again at 1 s.
pub const STABLE_UPTIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No restart: the policy does not ask for one (`no`, or `on-failure` after a clean exit).
    Stay,
    /// Restart after `delay`; `streak` is the number of restarts in a row, this one included.
    Backoff { delay: Duration, streak: u32 },
    /// `max_restarts` restarts in a row did not help.
    GiveUp { restarts: u32 },
}

/// Decides after an exit. `failed` is a non-zero code, a signal, or an unknown status;
/// `streak` the restarts in a row so far (before this exit).
pub fn on_exit(
    policy: RestartPolicy,
    max_restarts: Option<u32>,
    failed: bool,
    uptime: Duration,
    streak: u32,
) -> Decision {
    let wanted = match policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Always => true,
    };
    if !wanted {
        return Decision::Stay;
    }
    let streak = if uptime >= STABLE_UPTIME { 0 } else { streak };
    if max_restarts.is_some_and(|max| streak >= max) {
        return Decision::GiveUp { restarts: streak };
    }
    Decision::Backoff {
        delay: backoff(streak),
        streak: streak.saturating_add(1),
    }
}

/// The delay before restart number `streak + 1` of a streak: 1 s, 2 s, 4 s … 30 s.
pub fn backoff(streak: u32) -> Duration {
    BACKOFF_START
        .checked_mul(1u32.checked_shl(streak).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_secs(2);

    #[test]
    fn a_streak_read_from_the_state_cannot_overflow() {
        let d = on_exit(RestartPolicy::Always, None, true, SHORT, u32::MAX);
        assert_eq!(
            d,
            Decision::Backoff {
                delay: BACKOFF_MAX,
                streak: u32::MAX
            }
        );
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let delays: Vec<u64> = (0..8).map(|s| backoff(s).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(200), BACKOFF_MAX);
    }

    #[test]
    fn policy_no_never_restarts() {
        assert_eq!(
            on_exit(RestartPolicy::No, None, true, SHORT, 0),
            Decision::Stay
        );
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        assert_eq!(
            on_exit(RestartPolicy::OnFailure, None, false, SHORT, 0),
            Decision::Stay
        );
        assert_eq!(
            on_exit(RestartPolicy::OnFailure, None, true, SHORT, 0),
            Decision::Backoff {
                delay: Duration::from_secs(1),
                streak: 1
            }
        );
        assert_eq!(
            on_exit(RestartPolicy::Always, None, false, SHORT, 3),
            Decision::Backoff {
                delay: Duration::from_secs(8),
                streak: 4
            }
        );
    }

    #[test]
    fn a_minute_of_uptime_resets_the_streak() {
        assert_eq!(
            on_exit(RestartPolicy::Always, Some(3), true, STABLE_UPTIME, 3),
            Decision::Backoff {
                delay: BACKOFF_START,
                streak: 1
            }
        );
    }

    #[test]
    fn max_restarts_in_a_row_then_gives_up() {
        let mut streak = 0;
        let mut restarts = 0;
        loop {
            match on_exit(RestartPolicy::OnFailure, Some(3), true, SHORT, streak) {
                Decision::Backoff { streak: s, .. } => {
                    streak = s;
                    restarts += 1;
                }
                Decision::GiveUp { restarts: r } => {
                    assert_eq!(r, 3);
                    break;
                }
                Decision::Stay => panic!("must restart"),
            }
        }
        assert_eq!(restarts, 3);
        assert_eq!(
            on_exit(RestartPolicy::OnFailure, Some(0), true, SHORT, 0),
            Decision::GiveUp { restarts: 0 }
        );
    }
}
