//! [`ThreadPool`]: a persistent pool for the CPU kernels that allocates nothing per call.
//!
//! `threads − 1` worker threads are spawned once and parked between calls; the calling thread
//! is the last worker, so `ThreadPool::new(1)` has no threads at all. A call publishes one job
//! (`Fn(task)`, borrowed from the caller's stack) and hands out task indices as tickets from a
//! single atomic word; the caller takes tickets too and returns once every task has finished.
//! Nothing is allocated per call (no `Box`, `Vec` or channel), which a decode step that must not
//! allocate needs (DESIGN.md §4).
//!
//! The ticket word packs `epoch | n_tasks | next` (24 + 20 + 20 bits). A worker may run a job
//! only by winning a compare-and-swap on an unclaimed ticket of the current epoch, and a job
//! stays alive until all its tickets are finished, so a worker that wakes late (descheduled,
//! parked) finds no ticket and never touches the job: the caller never waits for a thread that
//! has nothing to do, which matters on a busy machine where a woken thread may not run for
//! milliseconds.
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

/// How often an idle worker polls for a new job before it parks (a fraction of a
/// millisecond). Decode issues matmuls microseconds apart, so workers stay awake through a
/// step and sleep between studies.
const SPIN_POLLS: u32 = 1 << 14;

/// Bits of the task count and of the next-ticket index in the ticket word.
const TASK_BITS: u32 = 20;
/// Most tasks one published round can have; larger calls run in several rounds.
const MAX_ROUND_TASKS: usize = (1 << TASK_BITS) - 1;
const TASK_MASK: u64 = (1 << TASK_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - 2 * TASK_BITS)) - 1;

/// The ticket word's fields: `(epoch, n_tasks, next)`.
fn unpack(word: u64) -> (u64, usize, usize) {
    (word >> (2 * TASK_BITS), ((word >> TASK_BITS) & TASK_MASK) as usize, (word & TASK_MASK) as usize)
}

/// The job a call publishes: a borrowed closure whose lifetime is erased while it is shared.
type JobPtr = *const (dyn Fn(usize) + Sync + 'static);

/// State shared by the caller and the workers.
struct Shared {
    /// `epoch | n_tasks | next`: bumped epoch = new job; `next < n_tasks` = tickets left.
    tickets: AtomicU64,
    /// The current job; written only by the caller that holds `call_lock`, while no task of
    /// the previous job is running (see `ThreadPool::run`).
    job: UnsafeCell<Option<JobPtr>>,
    /// Tasks of the current job that have finished.
    done: AtomicUsize,
    /// A task of the current job panicked.
    panicked: AtomicBool,
    /// The pool is being dropped.
    shutdown: AtomicBool,
    /// Workers parked on `wake` (checked by the caller to skip the syscall when none sleep).
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is the only field that is not `Sync` by itself. The caller holding
// `ThreadPool::call_lock` writes it before publishing the ticket word (Release) and only after
// every task of the previous job has finished (`done`, Acquire); a worker reads it only after
// winning a ticket of the job (the CAS, Acquire) and before reporting that ticket done
// (Release). So reads and writes never overlap. The closure behind it is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: the raw job pointer is only dereferenced under the protocol above; the closure it
// points to is `Sync`, so sharing it with other threads is sound.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Shared {
        Shared {
            tickets: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Claims and runs tickets of the job published in `word`'s epoch until none are left.
    /// Returns the last ticket word seen.
    fn drain(&self, mut word: u64) -> u64 {
        loop {
            let (_, n_tasks, next) = unpack(word);
            if next >= n_tasks {
                return word;
            }
            match self.tickets.compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: we hold an unfinished ticket of the job published with this
                    // word, so the caller keeps the closure alive and the slot unchanged until
                    // our `done` increment below (see `unsafe impl Sync for Shared`).
                    if let Some(job) = unsafe { *self.job.get() } {
                        // SAFETY: as above, the pointee outlives this call.
                        let job = unsafe { &*job };
                        if catch_unwind(AssertUnwindSafe(|| job(next))).is_err() {
                            self.panicked.store(true, Ordering::Release);
                        }
                    }
                    self.done.fetch_add(1, Ordering::AcqRel);
                    word = self.tickets.load(Ordering::Acquire);
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// The worker loop: wait for a new epoch, take tickets, repeat.
    fn worker(&self) {
        // Epoch 0 is "no job yet": a worker that starts late must still see a job published
        // before it got here, so it may not take the current epoch as seen.
        let mut seen = 0;
        loop {
            let mut polls = 0u32;
            let word = loop {
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                let word = self.tickets.load(Ordering::Acquire);
                if unpack(word).0 != seen {
                    break word;
                }
                polls += 1;
                if polls < SPIN_POLLS {
                    std::hint::spin_loop();
                    continue;
                }
                // Park. `sleepers` and `tickets` are both SeqCst, so either the caller sees this
                // worker as a sleeper (and notifies under the lock) or this worker sees the new
                // epoch below (and does not wait): no lost wake-up.
                let mut guard = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                while unpack(self.tickets.load(Ordering::SeqCst)).0 == seen
                    && !self.shutdown.load(Ordering::SeqCst)
                {
                    guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                polls = 0;
            };
            seen = unpack(self.drain(word)).0;
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
        let mut pool = ThreadPool::single();
        // Each worker checks in once it runs, and `new` returns only after all did: the
        // runtime's per-thread start-up allocations then never land inside a later (allocation-
        // free) call such as a decode step.
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        for i in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let started = Arc::clone(&started);
            let handle = std::thread::Builder::new()
                .name(format!("medregion-ops-{i}"))
                .spawn(move || {
                    {
                        let (count, cv) = &*started;
                        *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                        cv.notify_all();
                    }
                    drop(started);
                    shared.worker()
                })
                .map_err(|e| Error::Internal(format!("cannot start matmul worker thread {i}: {e}")))?;
            pool.workers.push(handle);
            pool.threads += 1;
        }
        let (count, cv) = &*started;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n < pool.workers.len() {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
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
        let guard = match self.call_lock.try_lock() {
            Ok(guard) if self.threads > 1 && n_tasks > 1 => guard,
            _ => return run_serial(n_tasks, job),
        };
        let mut panicked = false;
        let mut base = 0;
        while base < n_tasks {
            let count = (n_tasks - base).min(MAX_ROUND_TASKS);
            let round = move |t: usize| job(base + t);
            panicked |= self.run_round(count, &round);
            base += count;
        }
        drop(guard);
        if panicked {
            return Err(Error::Internal("a matmul worker task panicked".into()));
        }
        Ok(())
    }

    /// Publishes one job of `n_tasks ≤ MAX_ROUND_TASKS` tasks, helps, waits; returns whether a
    /// task panicked. The caller holds `call_lock`.
    fn run_round(&self, n_tasks: usize, job: &(dyn Fn(usize) + Sync)) -> bool {
        let shared = &*self.shared;
        // SAFETY: only the fat pointer's lifetime bound changes; the pointer is dereferenced
        // only by holders of this round's tickets, and we return after all of them finished.
        let erased: JobPtr =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), JobPtr>(job) };
        // SAFETY: we hold `call_lock` and every task of the previous round finished (we waited
        // for `done`), so nobody reads the slot now; publishing the ticket word below makes
        // the write visible before any ticket of this round can be claimed.
        unsafe { *shared.job.get() = Some(erased) };
        shared.done.store(0, Ordering::Release);
        shared.panicked.store(false, Ordering::Release);
        let epoch = (unpack(shared.tickets.load(Ordering::Acquire)).0 + 1) & EPOCH_MASK;
        let epoch = epoch.max(1); // 0 means "no job yet"
        let word = (epoch << (2 * TASK_BITS)) | ((n_tasks as u64) << TASK_BITS);
        shared.tickets.store(word, Ordering::SeqCst);
        if shared.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = shared.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.wake.notify_all();
        }
        shared.drain(word);
        let mut polls = 0u32;
        while shared.done.load(Ordering::Acquire) != n_tasks {
            polls = polls.saturating_add(1);
            if polls < SPIN_POLLS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every ticket of this round is claimed and finished, so no worker will read
        // the slot again before the next round publishes a new job; we still hold `call_lock`.
        unsafe { *shared.job.get() = None };
        shared.panicked.load(Ordering::Acquire)
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
