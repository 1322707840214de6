//! An opt-in wall-clock profile of the fused training ops: each op's forward and backward
//! pass, and the matrix products inside each, summed by name over a run (`bench-train
//! --profile`).
//!
//! Off (the default) a span costs one relaxed atomic load. Products are charged to the op whose
//! span is open on the same thread, so the per-op split of matrix products is exact at one
//! thread; with more, products on pool workers land under "(no op)" and times add up as
//! thread-seconds.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// One op's totals.
#[derive(Debug, Clone, Copy)]
pub struct OpTime {
    /// The op pass, e.g. `"linear.bwd"` ("(no op)": products outside any op).
    pub op: &'static str,
    /// Seconds inside the op's spans.
    pub secs: f64,
    /// Of which in its matrix products.
    pub matmul_secs: f64,
    pub calls: u64,
}

/// The ops' totals, in first-seen order.
static TABLE: Mutex<Vec<OpTime>> = Mutex::new(Vec::new());

thread_local! {
    /// The op whose span is open on this thread ("" when none).
    static CURRENT: Cell<&'static str> = const { Cell::new("") };
}

/// Starts recording (and clears what was recorded).
pub fn enable() {
    TABLE.lock().unwrap().clear();
    ENABLED.store(true, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A running span: adds its time to the table when dropped.
pub struct Span {
    name: &'static str,
    start: Instant,
    /// The op's span (`None`: a matrix product inside `name`), and the op open before it.
    outer: Option<&'static str>,
}

/// Times one op pass, e.g. `"linear.bwd"`, until the returned span drops.
pub fn op(name: &'static str) -> Option<Span> {
    enabled().then(|| Span {
        name,
        start: Instant::now(),
        outer: Some(CURRENT.with(|c| c.replace(name))),
    })
}

/// Times one matrix product, charged to the op open on this thread.
pub fn matmul() -> Option<Span> {
    enabled().then(|| Span {
        name: CURRENT.with(|c| c.get()),
        start: Instant::now(),
        outer: None,
    })
}

impl Drop for Span {
    fn drop(&mut self) {
        let dt = self.start.elapsed().as_secs_f64();
        let name = if self.name.is_empty() {
            "(no op)"
        } else {
            self.name
        };
        let mut table = TABLE.lock().unwrap();
        let row = match table.iter().position(|r| r.op == name) {
            Some(i) => &mut table[i],
            None => {
                table.push(OpTime {
                    op: name,
                    secs: 0.0,
                    matmul_secs: 0.0,
                    calls: 0,
                });
                table.last_mut().unwrap()
            }
        };
        match self.outer {
            Some(outer) => {
                row.secs += dt;
                row.calls += 1;
                CURRENT.with(|c| c.set(outer));
            }
            None => row.matmul_secs += dt,
        }
    }
}

/// What was recorded, and stops recording.
pub fn take() -> Vec<OpTime> {
    ENABLED.store(false, Ordering::Relaxed);
    std::mem::take(&mut *TABLE.lock().unwrap())
}
