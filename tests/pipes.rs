//! No write can panic or abort (issue 11, item 5, the output half): a foreground `up` whose
//! output reader went away (`mirrord-up up 2>&1 | head -2`: EPIPE) or whose terminal hung up
//! (EIO) keeps supervising: a failing save and an edit are still applied, Ctrl-C still stops
//! everything, and nothing stays at `stopping`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Project, alive, group_empty, service, wait_until, yaml};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(30);

/// A service that prints a line every 20 ms, with `FOO` set to `value`, and one that sleeps.
fn chatty(value: &str) -> String {
    let env = format!("env: {{override: {{FOO: \"{value}\"}}}}");
    yaml(&[
        service("sleeper", &["sleep", "1000"], &[]),
        service(
            "chatty",
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done",
            ],
            &[&env],
        ),
    ])
}

/// SIGKILLs `up` (by PID) if the test ends early; the project's drop stops its services.
struct Guard(i32);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[test]
fn foreground_up_whose_stdout_reader_left_still_restarts_and_stops() {
    let mut p = Project::new("headpipe");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&chatty("one"));
    // `2>&1 | head -2`: both streams into one pipe that is closed after two lines.
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut cmd = p.command(&["up"]);
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone().expect("dup"))
        .stderr(writer);
    let mut up = cmd.spawn().expect("spawn mirrord-up up");
    drop(cmd);
    let _guard = Guard(up.id() as i32);
    // `| head -2`: read two lines, then close the pipe.
    {
        let mut out = BufReader::new(reader);
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).expect("read a line");
            assert!(!line.is_empty(), "up ended before printing two lines");
        }
    }
    edit_and_stop_with_the_output_gone(&p, &mut up);
}

#[test]
fn foreground_up_whose_terminal_hung_up_still_restarts_and_stops() {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut p = Project::new("hangup");
    p.globals = vec!["--launcher".into(), "local".into()];
    p.write_yaml(&chatty("one"));
    // stdout and stderr on a pseudo-terminal (not our controlling one: no SIGHUP, only EIO
    // once the master side is closed, as after a terminal window is closed).
    let mut master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_CLOEXEC)
        .open(ptsname_r(&master).expect("ptsname"))
        .expect("open the terminal");
    let mut cmd = p.command(&["up"]);
    cmd.stdin(Stdio::null())
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let mut up = cmd.spawn().expect("spawn mirrord-up up");
    drop(cmd);
    let _guard = Guard(up.id() as i32);
    // Read until both services started, then hang up.
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen.matches("started (pid").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no start on the terminal:\n{seen}"
        );
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&master),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).expect("poll") > 0 {
            let mut buf = [0u8; 4096];
            let n = master.read(&mut buf).expect("read the terminal");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    drop(master);
    edit_and_stop_with_the_output_gone(&p, &mut up);
}

/// With `up`'s output gone (every write fails): a failing save (its error is written), then a
/// good edit, must still be applied; Ctrl-C must still stop everything and exit 130.
fn edit_and_stop_with_the_output_gone(p: &Project, up: &mut std::process::Child) {
    let sleeper = {
        let mut pid = 0;
        wait_until("sleeper runs", WAIT, || {
            pid = p.pids().get("sleeper").copied().unwrap_or(0);
            pid > 0 && alive(pid)
        });
        pid
    };
    let old = {
        let mut pid = 0;
        wait_until("chatty runs", WAIT, || {
            pid = p.pids().get("chatty").copied().unwrap_or(0);
            pid > 0 && alive(pid)
        });
        pid
    };
    // The service keeps printing into the closed pipe. A save that fails (its command does not
    // exist) is reported on the closed stderr; then a good edit must still be applied.
    p.write_yaml(&chatty("two").replace("[\"sh\"", "[\"no-such-command-here\""));
    wait_until("the failed save is recorded", WAIT, || {
        p.ps_map()
            .get("chatty")
            .is_some_and(|r| r["status"] == "failed")
    });
    p.write_yaml(&chatty("three"));
    let mut new = old;
    wait_until("chatty runs under a new PID", WAIT, || {
        let rows = p.ps_map();
        new = rows
            .get("chatty")
            .and_then(|r| r["pid"].as_i64())
            .map_or(old, |v| v as i32);
        new != old && alive(new)
    });
    assert!(up.try_wait().expect("try_wait").is_none(), "up ended");
    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).expect("SIGINT");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = up.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "up did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(group_empty(new), "Ctrl-C left pid {new}");
    assert!(group_empty(sleeper), "Ctrl-C left pid {sleeper}");
    for row in p.ps() {
        assert_ne!(row["status"], "stopping", "{row}");
    }
}
