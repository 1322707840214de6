//! Splitting matmul rows between the badge's two cores (or a host thread standing in for the
//! second core). Each output row is computed by exactly the same code whichever worker runs it,
//! so results are bit-identical with one or two workers.

/// A row job: fills `out`, which holds the output rows starting at row `first_row`.
pub type RowJob<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Runs row jobs, possibly on more than one core.
pub trait Workers {
    /// Computes all of `out` by calling `job` on one or more disjoint row ranges.
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>);
    /// Computes all of `out` on the calling core alone: the badge's fallback when two cores
    /// running the vector kernel at once disagree (see `app::boot_self_test`). Wrappers (a
    /// simulator's fault injection, a profiler) see it as a call of its own.
    fn run_rows_one(&self, out: &mut [f32], job: &RowJob<'_>) {
        job(0, out);
    }
    /// How many workers share the rows (for reports).
    fn count(&self) -> usize;
}

/// A borrowed set of workers (the caller keeps them, for example to read their counters).
impl<T: Workers + ?Sized> Workers for &T {
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
        (**self).run_rows(out, job)
    }
    fn run_rows_one(&self, out: &mut [f32], job: &RowJob<'_>) {
        (**self).run_rows_one(out, job)
    }
    fn count(&self) -> usize {
        (**self).count()
    }
}

/// Everything on the calling core.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleWorker;

impl Workers for SingleWorker {
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
        job(0, out);
    }
    fn count(&self) -> usize {
        1
    }
}

/// Where a two-worker split puts the boundary: the first half rounded to a multiple of 4 rows.
pub fn split_point(rows: usize) -> usize {
    (rows / 2) & !3
}

#[cfg(feature = "std")]
pub use host::ThreadWorkers;

/// Rows per chunk when two workers share a matmul dynamically: about an eighth of the rows,
/// a multiple of 4 (the kernels' row block), at least 8.
pub fn chunk_rows(rows: usize) -> usize {
    (rows.div_ceil(8).div_ceil(4) * 4).max(8)
}

#[cfg(feature = "std")]
mod host {
    use super::{chunk_rows, RowJob, Workers};
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// How long a waiting side polls before it sleeps on the condition variable. A matmul
    /// hand-off on the 1M model comes every few microseconds, far below the cost of a futex
    /// wake-up; between answers the helper goes to sleep after this long.
    const SPIN: Duration = Duration::from_micros(200);
    /// The first part of [`SPIN`], during which a waiting side does not even yield.
    const SPIN_ONLY: Duration = Duration::from_micros(20);

    /// `slot` = `seq · 4 + state`: the task number and where it stands.
    const POSTED: u32 = 1; // published, the helper may take it
    const TAKEN: u32 = 2; // the helper is working on it
    const DONE: u32 = 3; // the helper has finished its chunks
    const CLOSED: u32 = 0; // the caller finished every chunk before the helper came

    /// The job pointer before the first task (never called).
    const NO_JOB: &RowJob<'static> = &|_, _| {};

    /// The current row job: a type-erased pointer to the job and to the whole output. Valid
    /// only while its `run_rows` call lasts, which ends only once the helper cannot touch it.
    struct Task {
        job: *const RowJob<'static>,
        out: *mut f32,
        len: usize,
        chunk: usize,
    }

    struct Shared {
        slot: AtomicU32,
        /// Next chunk to claim (both sides claim chunks, so a descheduled helper costs
        /// nothing but its current chunk).
        next: AtomicUsize,
        task: UnsafeCell<Task>,
        quit: AtomicBool,
        /// Slow path: a side that stopped polling sleeps here and sets its flag first.
        lock: Mutex<()>,
        cv: Condvar,
        helper_sleeps: AtomicBool,
        caller_sleeps: AtomicBool,
    }

    // SAFETY: `task` is written by the caller only while no task is POSTED or TAKEN, and read
    // by the helper only after it moved the slot from POSTED to TAKEN (acquire/release on
    // `slot`); the job is Sync and the chunks it writes are disjoint (claimed through `next`).
    unsafe impl Sync for Shared {}
    unsafe impl Send for Shared {}

    impl Shared {
        /// Claims and runs chunks until none are left.
        ///
        /// # Safety
        /// `task` must describe a live job (see [`Task`]).
        unsafe fn run_chunks(&self) {
            // SAFETY: see `Shared`: the task is not written while chunks are being claimed.
            let t = unsafe { &*self.task.get() };
            loop {
                let first = self.next.fetch_add(t.chunk, Relaxed);
                if first >= t.len {
                    return;
                }
                let n = t.chunk.min(t.len - first);
                // SAFETY: chunks are disjoint (each `first` is claimed once) and lie inside the
                // output, which outlives the task; the job pointer is live (caller's borrow).
                unsafe {
                    let out = std::slice::from_raw_parts_mut(t.out.add(first), n);
                    (*t.job)(first, out);
                }
            }
        }

        /// Polls `ready` for [`SPIN_ONLY`], then polls and yields the core to other threads
        /// until [`SPIN`], then sleeps on the condition variable until it holds, announcing the
        /// sleep through `flag` (which the other side checks after publishing).
        fn wait(&self, flag: &AtomicBool, ready: impl Fn() -> bool) {
            let start = Instant::now();
            let mut polls = 0u32;
            while !ready() {
                polls += 1;
                if !polls.is_multiple_of(64) {
                    core::hint::spin_loop();
                    continue;
                }
                let waited = start.elapsed();
                if waited > SPIN {
                    let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                    flag.store(true, SeqCst);
                    while !ready() {
                        g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    flag.store(false, SeqCst);
                    return;
                }
                if waited > SPIN_ONLY {
                    // On a busy machine the other side may be waiting for this very core.
                    std::thread::yield_now();
                }
            }
        }

        /// Wakes the other side if it announced a sleep (after a SeqCst publish).
        fn wake(&self, flag: &AtomicBool) {
            if flag.load(SeqCst) {
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.cv.notify_all();
            }
        }
    }

    /// A persistent second thread standing in for the badge's core 1.
    ///
    /// Hand-off: the caller publishes the job and both threads claim chunks of rows from a
    /// shared counter, so the split adapts to a helper that starts late or is descheduled on a
    /// busy machine. Waiting sides poll briefly (hand-offs come every few microseconds during
    /// generation) and then sleep. Which worker computes a row never changes its value.
    pub struct ThreadWorkers {
        shared: Arc<Shared>,
        seq: core::cell::Cell<u32>,
        handle: Option<JoinHandle<()>>,
    }

    impl ThreadWorkers {
        pub fn new() -> Self {
            let shared = Arc::new(Shared {
                slot: AtomicU32::new(CLOSED),
                next: AtomicUsize::new(0),
                task: UnsafeCell::new(Task {
                    job: NO_JOB,
                    out: core::ptr::null_mut(),
                    len: 0,
                    chunk: 1,
                }),
                quit: AtomicBool::new(false),
                lock: Mutex::new(()),
                cv: Condvar::new(),
                helper_sleeps: AtomicBool::new(false),
                caller_sleeps: AtomicBool::new(false),
            });
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("badge-core1".into())
                .spawn(move || {
                    let mut last = 0u32;
                    loop {
                        s.wait(&s.helper_sleeps, || {
                            s.quit.load(SeqCst) || {
                                let v = s.slot.load(SeqCst);
                                v & 3 == POSTED && v >> 2 != last
                            }
                        });
                        if s.quit.load(SeqCst) {
                            return;
                        }
                        // The caller may have closed the task since `wait` saw it posted.
                        let v = s.slot.load(Acquire);
                        if v & 3 != POSTED {
                            continue;
                        }
                        last = v >> 2;
                        let base = v & !3;
                        if s.slot
                            .compare_exchange(v, base | TAKEN, Acquire, Relaxed)
                            .is_err()
                        {
                            continue; // the caller finished it alone
                        }
                        // SAFETY: TAKEN keeps the caller in `run_rows` until we store DONE.
                        unsafe { s.run_chunks() };
                        s.slot.store(base | DONE, SeqCst);
                        s.wake(&s.caller_sleeps);
                    }
                })
                .expect("spawn the second worker thread");
            ThreadWorkers {
                shared,
                seq: core::cell::Cell::new(0),
                handle: Some(handle),
            }
        }
    }

    impl Default for ThreadWorkers {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Workers for ThreadWorkers {
        fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>) {
            let chunk = chunk_rows(out.len());
            if out.len() <= chunk {
                return job(0, out);
            }
            let s = &*self.shared;
            let seq = self.seq.get().wrapping_add(1) & (u32::MAX >> 2);
            self.seq.set(seq);
            // SAFETY: no task is POSTED or TAKEN (the previous call waited for DONE or closed
            // it), so the helper does not read `task` now. Lifetime erasure only: this call
            // does not return while the helper may still use the pointers.
            unsafe {
                *s.task.get() = Task {
                    job: core::mem::transmute::<*const RowJob<'_>, *const RowJob<'static>>(job),
                    out: out.as_mut_ptr(),
                    len: out.len(),
                    chunk,
                };
            }
            s.next.store(0, Relaxed);
            let posted = seq << 2 | POSTED;
            s.slot.store(posted, SeqCst);
            s.wake(&s.helper_sleeps);
            // SAFETY: the task was just published and stays valid until we return.
            unsafe { s.run_chunks() };
            if s.slot
                .compare_exchange(posted, seq << 2 | CLOSED, SeqCst, SeqCst)
                .is_ok()
            {
                return; // the helper never started: nothing of ours is left with it
            }
            s.wait(&s.caller_sleeps, || s.slot.load(Acquire) == seq << 2 | DONE);
        }
        fn count(&self) -> usize {
            2
        }
    }

    impl Drop for ThreadWorkers {
        fn drop(&mut self) {
            self.shared.quit.store(true, SeqCst);
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
            drop(_g);
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}
