//! [`ThreadPool`]: a persistent pool for the CPU kernels that allocates nothing per call.
//!
//! `threads − 1` worker threads are spawned once and parked between calls; the calling thread
//! is the last worker, so `ThreadPool::new(1)` has no threads at all. A call publishes one job
//! (`Fn(task)`, borrowed from the caller's stack) and a task count; every participant takes the
//! next task index from one atomic counter until none are left, and the caller returns only
//! after every worker has let go of the job. The hand-off is an epoch counter, a job slot and a
//! done counter — no `Box`, `Vec` or channel per call — which is what a decode step that must
//! not allocate needs (DESIGN.md §4).
//!
//! Why not rayon (STYLE.md rule 12 says: prefer the well-kept crate): rayon's entry from a
//! thread outside its pool goes through its global injector queue, whose segmented list
//! allocates new blocks as jobs are pushed, and its `scope` boxes every spawned job, so "no
//! heap allocation per decode step" could not be promised; we also want the wait policy (spin
//! briefly, then park) and the behaviour when two sessions share a pool under our control.
//!
//! Determinism: which thread runs which task varies from call to call (dynamic scheduling
//! keeps busy machines balanced), so a job must make each task's result independent of the
//! thread that runs it. The matmul kernels do: every output element is computed by one task
//! with a fixed summation order, so results are bit-identical for any thread count.
//!
//! Concurrency: the pool is `Sync`. When two threads call [`ThreadPool::run`] at once, or a
//! task calls it again from inside a job, the second call runs its tasks serially on its own
//! thread (same results, never a deadlock).

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Result};

/// How often an idle worker polls for a new job before it parks (a fraction of a millisecond). Decode
/// issues matmuls microseconds apart, so workers stay awake through a step and sleep between
/// studies.
const SPIN_POLLS: u32 = 1 << 14;

/// The job a call publishes: a borrowed closure whose lifetime is erased while it is shared.
type JobPtr = *const (dyn Fn(usize) + Sync + 'static);

/// State shared by the caller and the workers.
struct Shared {
    /// Bumped once per published job; a worker runs a job when it sees a new value.
    epoch: AtomicU64,
    /// The current job; written only by the caller that holds `call_lock`, while no worker is
    /// inside a job (see `ThreadPool::run`).
    job: UnsafeCell<Option<JobPtr>>,
    /// Number of tasks of the current job.
    n_tasks: AtomicUsize,
    /// The next task index to hand out.
    next: AtomicUsize,
    /// Workers that have not yet finished the current job.
    active: AtomicUsize,
    /// A task of the current job panicked.
    panicked: AtomicBool,
    /// The pool is being dropped.
    shutdown: AtomicBool,
    /// Workers parked on `wake` (checked by the caller to skip the syscall when none sleep).
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is the only field that is not `Sync` by itself. It is written by the caller
// holding `ThreadPool::call_lock` before it publishes the epoch (Release) and only while
// `active == 0` (no worker reads it), and read by workers after they observe the new epoch
// (Acquire) and before they decrement `active`. The closure behind it is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above; the closure it
// points to is `Sync`, so sharing it with other threads is sound.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Shared {
        Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Takes task indices until none are left, catching panics (a panicking task marks the job
    /// as failed instead of killing the worker and hanging the caller).
    fn drain(&self, job: &(dyn Fn(usize) + Sync)) {
        let n_tasks = self.n_tasks.load(Ordering::Acquire);
        loop {
            let task = self.next.fetch_add(1, Ordering::Relaxed);
            if task >= n_tasks {
                break;
            }
            if catch_unwind(AssertUnwindSafe(|| job(task))).is_err() {
                self.panicked.store(true, Ordering::Release);
            }
        }
    }

    /// The worker loop: wait for a new epoch, run the job's tasks, report done.
    fn worker(&self) {
        // Epoch 0 is "no job yet": a worker that starts late must still run a job published
        // before it got here, so it may not take the current epoch as seen.
        let mut seen = 0;
        loop {
            let mut polls = 0u32;
            loop {
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let epoch = self.epoch.load(Ordering::Acquire);
                if epoch != seen {
                    seen = epoch;
                    break;
                }
                polls += 1;
                if polls < SPIN_POLLS {
                    std::hint::spin_loop();
                    continue;
                }
                // Park. `sleepers` and `epoch` are both SeqCst, so either the caller sees this
                // worker as a sleeper (and notifies under the lock) or this worker sees the new
                // epoch below (and does not wait): no lost wake-up.
                let guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut guard = guard;
                while self.epoch.load(Ordering::SeqCst) == seen && !self.shutdown.load(Ordering::SeqCst) {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                polls = 0;
            }
            // SAFETY: the caller wrote `job` before bumping the epoch we just observed
            // (Acquire), and keeps the closure alive and the slot unchanged until `active`
            // reaches zero, which happens only after the `fetch_sub` below.
            let job = unsafe { *self.job.get() };
            if let Some(job) = job {
                // SAFETY: as above, the pointee outlives this use.
                self.drain(unsafe { &*job });
            }
            self.active.fetch_sub(1, Ordering::Release);
        }
    }
}

/// A persistent pool of `threads − 1` parked workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Held for the duration of one parallel call; a second concurrent call runs serially.
    call_lock: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("threads", &self.threads).finish()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in all, the caller included (`threads − 1` are spawned).
    /// `0` means one per available core ([`std::thread::available_parallelism`]).
    pub fn new(threads: usize) -> Result<ThreadPool> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            threads
        };
        let shared = Arc::new(Shared::new());
        let mut pool = ThreadPool { shared, workers: Vec::new(), threads: 1, call_lock: Mutex::new(()) };
        for i in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("medregion-ops-{i}"))
                .spawn(move || shared.worker())
                .map_err(|e| Error::Internal(format!("cannot start matmul worker thread {i}: {e}")))?;
            pool.workers.push(handle);
            pool.threads += 1;
        }
        Ok(pool)
    }

    /// A pool that runs everything on the calling thread (spawns nothing, cannot fail).
    pub fn single() -> ThreadPool {
        ThreadPool {
            shared: Arc::new(Shared::new()),
            workers: Vec::new(),
            threads: 1,
            call_lock: Mutex::new(()),
        }
    }

    /// Threads that share the work of one call, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(task)` once for every `task` in `0..n_tasks`, spread over the pool, and
    /// returns when all have finished. Allocates nothing. A panicking task is caught and
    /// reported as [`Error::Internal`] (the other tasks still run).
    pub fn run(&self, n_tasks: usize, job: &(dyn Fn(usize) + Sync)) -> Result<()> {
        if n_tasks == 0 {
            return Ok(());
        }
        let guard = match self.call_lock.try_lock() {
            Ok(guard) if self.threads > 1 && n_tasks > 1 => guard,
            _ => return run_serial(n_tasks, job),
        };
        let shared = &*self.shared;
        // SAFETY: only the fat pointer's lifetime bound changes; the pointer is dereferenced
        // only while this call is running (we wait for `active == 0` before returning).
        let erased: JobPtr = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), JobPtr>(job) };
        // SAFETY: we hold `call_lock` and the previous call waited for `active == 0`, so no
        // worker reads the slot now; the epoch bump below publishes the write.
        unsafe { *shared.job.get() = Some(erased) };
        shared.n_tasks.store(n_tasks, Ordering::Release);
        shared.next.store(0, Ordering::Release);
        shared.panicked.store(false, Ordering::Release);
        shared.active.store(self.workers.len(), Ordering::Release);
        shared.epoch.fetch_add(1, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        shared.drain(job);
        let mut polls = 0u32;
        while shared.active.load(Ordering::Acquire) != 0 {
            polls = polls.saturating_add(1);
            if polls < SPIN_POLLS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every worker has finished with the job (`active == 0`), and we still hold
        // `call_lock`.
        unsafe { *shared.job.get() = None };
        let panicked = shared.panicked.load(Ordering::Acquire);
        drop(guard);
        if panicked {
            return Err(Error::Internal("a matmul worker task panicked".into()));
        }
        Ok(())
    }
}

/// Runs every task on the calling thread (one-thread pools, nested or concurrent calls).
fn run_serial(n_tasks: usize, job: &(dyn Fn(usize) + Sync)) -> Result<()> {
    let mut panicked = false;
    for task in 0..n_tasks {
        panicked |= catch_unwind(AssertUnwindSafe(|| job(task))).is_err();
    }
    if panicked {
        return Err(Error::Internal("a matmul task panicked".into()));
    }
    Ok(())
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _lock = self.shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for handle in self.workers.drain(..) {
            // A worker catches task panics, so joining fails only if the thread itself broke;
            // there is nothing useful to do with that in a destructor.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for n_tasks in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicU32> = (0..n_tasks).map(|_| AtomicU32::new(0)).collect();
                pool.run(n_tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn panics_are_errors_and_the_pool_survives() {
        let pool = ThreadPool::new(3).unwrap();
        let r = pool.run(16, &|t| {
            if t == 5 {
                panic!("task 5 fails on purpose");
            }
        });
        assert!(matches!(r, Err(Error::Internal(_))));
        let count = AtomicU32::new(0);
        pool.run(16, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn nested_and_concurrent_calls_do_not_deadlock() {
        let pool = Arc::new(ThreadPool::new(2).unwrap());
        let count = AtomicU32::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 12);
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let c = AtomicU32::new(0);
                    for _ in 0..50 {
                        pool.run(8, &|_| {
                            c.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                    }
                    c.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 400);
        }
    }

    #[test]
    fn workers_wake_after_parking() {
        let pool = ThreadPool::new(2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let count = AtomicU32::new(0);
        pool.run(64, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
