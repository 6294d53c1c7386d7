//! What goes wrong in the process layer, as values: callers match on them, messages come
//! from their `Display`.

/// Why a recorded identity must never be signalled (`ProcessIdentity::refusal`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A pid or group of 0 or 1: `killpg(0)` is the caller's own group, 1 is everyone's.
    #[error("the state records pid {pid} and process group {pgid}, which is no service's")]
    NoServiceGroup { pid: i32, pgid: i32 },
    /// mirrord-up's own pid, group or session (`ours` = pid, group, session).
    #[error(
        "the state records {what} {id}, which is mirrord-up's own (pid {}, group {}, session {})",
        ours.0, ours.1, ours.2
    )]
    OurOwn {
        what: IdKind,
        id: i32,
        ours: (i32, i32, i32),
    },
    /// A service leads its own group: a pid in another group is not one we started.
    #[error(
        "the state records pid {pid} in process group {pgid}, but a service leads its own group"
    )]
    NotLeader { pid: i32, pgid: i32 },
}

/// Which id of a record a [`Refusal`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Pid,
    Group,
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdKind::Pid => "pid",
            IdKind::Group => "process group",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_before() {
        assert_eq!(
            Refusal::NoServiceGroup { pid: 1, pgid: 0 }.to_string(),
            "the state records pid 1 and process group 0, which is no service's"
        );
        assert_eq!(
            Refusal::OurOwn {
                what: IdKind::Group,
                id: 7,
                ours: (9, 7, 5)
            }
            .to_string(),
            "the state records process group 7, which is mirrord-up's own (pid 9, group 7, session 5)"
        );
        assert_eq!(
            Refusal::NotLeader { pid: 10, pgid: 11 }.to_string(),
            "the state records pid 10 in process group 11, but a service leads its own group"
        );
    }
}
