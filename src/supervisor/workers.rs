//! Threads kept for the loop's stops and for a level's spawns. A job runs on an idle one, else
//! on a new thread that stays once the job is over (a few at most). Starting a thread — its stack, guard page and
//! signal stack — took 0.2–0.6 ms on the machine measured, between a reload's pass and its
//! stop's signal; handing a stop to a waiting thread is one wake-up. An idle worker blocks on
//! its channel: no timer, no wake-up.
//!
//! Once the process is ending, none is kept ([`Workers::run_last`], [`Workers::end_kept`]):
//! each thread still there at the exit is woken to end, and the last of them to run takes the
//! process apart (its memory, its descriptors) — traced, a `down` of 500 services waited 1.7 ms
//! for a kept stop thread woken behind another process on a busy CPU while the other was idle.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A set of kept threads.
pub struct Workers {
    /// The idle workers' channels; a worker puts its own back when its job is over.
    idle: Mutex<Vec<Sender<Job>>>,
    /// Their threads' name.
    name: &'static str,
    /// Set once the process is ending: a worker whose job is over ends.
    ending: AtomicBool,
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
            ending: AtomicBool::new(false),
        }
    }

    /// From now on no worker is kept: the idle ones end now, a busy one once its job is over.
    pub fn end_kept(&self) {
        self.ending.store(true, Ordering::SeqCst);
        // Their senders dropped, the idle workers' waits fail: they end.
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// [`Self::run`] for the process's last job of this kind: on an idle worker (one wake-up,
    /// as any job), whose thread then ends, as do the other idle ones ([`Self::end_kept`]).
    pub fn run_last(&'static self, job: Job) {
        self.ending.store(true, Ordering::SeqCst);
        self.run(job);
        self.end_kept();
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
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || {
                let mut next = Some(job);
                while let Some(job) = next.take() {
                    job();
                    // The idle list holds the only sender of the channel waited on: cleared
                    // ([`Self::end_kept`]), the wait fails and the thread ends. Read under the
                    // lock the list is cleared under: a worker put back is either seen there
                    // or not put back.
                    let (tx, rx) = channel::<Job>();
                    match self.idle.lock() {
                        Ok(mut idle)
                            if idle.len() < KEPT && !self.ending.load(Ordering::SeqCst) =>
                        {
                            idle.push(tx)
                        }
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

    /// Tells on `tx` when the thread it is set on ends (its thread-locals are dropped then).
    struct OnThreadEnd(Sender<std::thread::ThreadId>);

    impl Drop for OnThreadEnd {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    thread_local! {
        static ENDS: std::cell::RefCell<Option<OnThreadEnd>> = const { std::cell::RefCell::new(None) };
    }

    /// The thread of the last job ends after it, and so do the idle ones: once the process is
    /// ending, no thread is left waiting for a job (each would be one more for the exit).
    #[test]
    fn after_the_last_job_no_worker_is_kept() {
        static LAST: Workers = Workers::new("test-last");
        let (ended_tx, ended_rx) = channel();
        let (ran_tx, ran_rx) = channel();
        let job = |release: Option<std::sync::mpsc::Receiver<()>>| -> Job {
            let (ended, ran) = (ended_tx.clone(), ran_tx.clone());
            Box::new(move || {
                ENDS.with(|e| {
                    e.borrow_mut().get_or_insert_with(|| OnThreadEnd(ended));
                });
                ran.send(std::thread::current().id()).unwrap();
                if let Some(r) = release {
                    r.recv().unwrap();
                }
            })
        };
        // Two workers, both kept once their jobs are over.
        let (release_tx, release_rx) = sync_channel::<()>(0);
        LAST.run(job(Some(release_rx)));
        let first = ran_rx.recv().unwrap();
        LAST.run(job(None));
        let second = ran_rx.recv().unwrap();
        assert_ne!(first, second);
        release_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while LAST.idle.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the workers were not kept"
            );
            std::thread::yield_now();
        }
        assert!(ended_rx.try_recv().is_err(), "a kept worker ended");
        // The last job runs on one of them, without a new thread; then both end.
        LAST.run_last(job(None));
        let last = ran_rx.recv().unwrap();
        assert!(
            last == first || last == second,
            "a new thread for the last job"
        );
        let mut ended: Vec<_> = (0..2)
            .map(|_| {
                ended_rx
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .expect("a worker was kept after the last job")
            })
            .collect();
        ended.sort_by_key(|id| format!("{id:?}"));
        let mut both = vec![first, second];
        both.sort_by_key(|id| format!("{id:?}"));
        assert_eq!(ended, both);
        assert!(LAST.idle.lock().unwrap().is_empty());
        // A job after it still runs, on a thread that is not kept either.
        LAST.run(job(None));
        let after = ran_rx.recv().unwrap();
        assert_eq!(
            ended_rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .ok(),
            Some(after)
        );
    }
}
