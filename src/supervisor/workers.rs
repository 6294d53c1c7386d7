//! Threads kept for the loop's stops and for a level's spawns. A job runs on an idle one, else
//! on a new thread that stays once the job is over (a few at most). Starting a thread — its stack, guard page and
//! signal stack — took 0.2–0.6 ms on the machine measured, between a reload's pass and its
//! stop's signal; handing a stop to a waiting thread is one wake-up. An idle worker blocks on
//! its channel: no timer, no wake-up.

use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A set of kept threads.
pub struct Workers {
    /// The idle workers' channels; a worker puts its own back when its job is over.
    idle: Mutex<Vec<Sender<Job>>>,
    /// Their threads' name.
    name: &'static str,
}

/// The loop's stops.
pub static STOPS: Workers = Workers::new("stop");

/// The helpers of a level's spawns (`process::spawn_level`). The processes a thread spawned
/// are on its own children list while it runs, not on the main thread's, which a stop reads
/// for escapes (`os::adopted_children`): a kept helper keeps them there.
pub static SPAWNS: Workers = Workers::new("spawn");

/// How many idle workers are kept; one finishing beyond it ends.
const KEPT: usize = 4;

impl Workers {
    pub const fn new(name: &'static str) -> Workers {
        Workers {
            idle: Mutex::new(Vec::new()),
            name,
        }
    }

    /// Runs `job` on an idle worker, or on a new one.
    pub fn run(&'static self, job: Job) {
        self.try_run(job).expect("a thread for a stop");
    }

    /// [`Self::run`], or the error of starting a new thread (`job` is then dropped unrun).
    pub fn try_run(&'static self, job: Job) -> std::io::Result<()> {
        let mut job = job;
        while let Some(worker) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            match worker.send(job) {
                Ok(()) => return Ok(()),
                // That worker ended: another, or a new one.
                Err(back) => job = back.0,
            }
        }
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                let mut next = Some(job);
                while let Some(job) = next.take() {
                    job();
                    match self.idle.lock() {
                        Ok(mut idle) if idle.len() < KEPT => idle.push(tx.clone()),
                        _ => return,
                    }
                    next = rx.recv().ok();
                }
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A job after another runs on the thread the first one ran on; a job given while
    /// another is running does not wait for it.
    #[test]
    fn a_worker_is_kept_for_the_next_job_and_a_busy_one_is_not_waited_for() {
        static MINE: Workers = Workers::new("test");
        let (done_tx, done_rx) = channel();
        let tx = done_tx.clone();
        MINE.run(Box::new(move || {
            tx.send(std::thread::current().id()).unwrap()
        }));
        let first = done_rx.recv().unwrap();
        // The worker goes back to the idle list right after its job's send: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while MINE.idle.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker was not kept"
            );
            std::thread::yield_now();
        }
        // Blocks its worker until released.
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let tx = done_tx.clone();
        MINE.run(Box::new(move || {
            tx.send(std::thread::current().id()).unwrap();
            release_rx.recv().unwrap();
        }));
        let second = done_rx.recv().unwrap();
        assert_eq!(second, first, "a new thread for the next job");
        // While that one is busy, another job runs on another thread.
        let tx = done_tx.clone();
        MINE.run(Box::new(move || {
            tx.send(std::thread::current().id()).unwrap()
        }));
        let third = done_rx.recv().unwrap();
        assert_ne!(third, first);
        release_tx.send(()).unwrap();
    }
}
