//! Splitting matmul rows between the badge's two cores (or a host thread standing in for the
//! second core). Each output row is computed by exactly the same code whichever worker runs it,
//! so results are bit-identical with one or two workers.

/// A row job: fills `out`, which holds the output rows starting at row `first_row`.
pub type RowJob<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Runs row jobs, possibly on more than one core.
pub trait Workers {
    /// Computes all of `out` by calling `job` on one or more disjoint row ranges.
    fn run_rows(&self, out: &mut [f32], job: &RowJob<'_>);
    /// How many workers share the rows (for reports).
    fn count(&self) -> usize;
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

#[cfg(feature = "std")]
mod host {
    use super::{split_point, RowJob, Workers};
    use std::sync::{Arc, Condvar, Mutex};
    use std::thread::JoinHandle;

    /// A job handed to the helper thread: a type-erased pointer to the row job and to the
    /// second half of the output. Valid only until `run_rows` returns, which waits for `done`.
    struct Task {
        job: *const RowJob<'static>,
        out: *mut f32,
        len: usize,
        first_row: usize,
    }
    // SAFETY: the pointers are only dereferenced while `run_rows` blocks on completion, so the
    // referenced job (Sync) and the disjoint output half outlive every use on the other thread.
    unsafe impl Send for Task {}

    #[derive(Default)]
    struct Slot {
        task: Option<Task>,
        done: bool,
        quit: bool,
    }

    /// A persistent second thread standing in for the badge's core 1.
    pub struct ThreadWorkers {
        shared: Arc<(Mutex<Slot>, Condvar)>,
        handle: Option<JoinHandle<()>>,
    }

    impl ThreadWorkers {
        pub fn new() -> Self {
            let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("badge-core1".into())
                .spawn(move || loop {
                    let (lock, cv) = &*s;
                    let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                    while slot.task.is_none() && !slot.quit {
                        slot = cv.wait(slot).unwrap_or_else(|e| e.into_inner());
                    }
                    if slot.quit {
                        return;
                    }
                    let task = slot.task.take().expect("task present");
                    drop(slot);
                    // SAFETY: see `Task`: the caller waits for `done` before the borrow ends.
                    unsafe {
                        let out = std::slice::from_raw_parts_mut(task.out, task.len);
                        (*task.job)(task.first_row, out);
                    }
                    let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                    slot.done = true;
                    cv.notify_all();
                })
                .expect("spawn the second worker thread");
            ThreadWorkers {
                shared,
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
            let mid = split_point(out.len());
            if mid == 0 {
                return job(0, out);
            }
            let (first, second) = out.split_at_mut(mid);
            let (lock, cv) = &*self.shared;
            {
                let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
                // SAFETY: lifetime erasure only; we block below until the thread is done.
                let job_static: *const RowJob<'static> =
                    unsafe { std::mem::transmute(job as *const RowJob<'_>) };
                slot.done = false;
                slot.task = Some(Task {
                    job: job_static,
                    out: second.as_mut_ptr(),
                    len: second.len(),
                    first_row: mid,
                });
                cv.notify_all();
            }
            job(0, first);
            let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !slot.done {
                slot = cv.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
        }
        fn count(&self) -> usize {
            2
        }
    }

    impl Drop for ThreadWorkers {
        fn drop(&mut self) {
            let (lock, cv) = &*self.shared;
            lock.lock().unwrap_or_else(|e| e.into_inner()).quit = true;
            cv.notify_all();
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }
}
