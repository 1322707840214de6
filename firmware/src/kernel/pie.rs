//! ESP32-S3 PIE int8 group dot product (Xtensa inline assembly).
//!
//! The kernel is one `asm!` block whose template text is [`PIE_DOT_ASM`]. The same text is
//! parsed and executed on the host by [`super::pie_interp`], which is how the kernel is tested:
//! no machine in this project can run PIE instructions, and no Xtensa toolchain is reachable.
//!
//! # The rule it is written to: no load-use hazards
//!
//! A public ESP32-S3 project that ran int8 PIE dot products on both cores of real hardware
//! (an M5Stack CoreS3 port of a small diffusion model; its hardware notes) saw results change
//! from run to run for the same input when both cores ran PIE at once, never with one core.
//! It traced this to two patterns, both in this kernel's earlier shape (Espressif's
//! single-core one): a fused `ee.vmulas.s8.accx.ld.ip q0, a, 16, q0, q1`, whose load target is
//! one of its own MAC sources and which sometimes multiplied the new value when the other core
//! slowed internal-SRAM reads; and a q register read right after the `ee.vld.128.ip` that
//! loaded it, which still failed about one long run in four. It cites Espressif's esp-dl
//! documentation for a two-cycle latency from a q-register load to its use. What held in every
//! run there, and what this kernel obeys:
//!
//! * no fused MAC+load into one of its MAC sources (this kernel uses no fused form at all);
//! * every load is issued ahead, into a register the current MAC does not read;
//! * at least four instructions between a load and the first instruction that reads its
//!   register, counted along the executed path, loop wrap-around included.
//!
//! The host interpreter enforces these rules ([`super::pie_interp::Hazards`]): the old shape
//! is rejected there, and with hazards turned into garbage it gives wrong sums, as it did on
//! that hardware. This kernel runs clean with windows of 2, 3 and 4 instructions.
//!
//! What stays unknown until it runs on a badge: whether four instructions are enough on this
//! board's PSRAM (that project's data was in internal SRAM; our weights stream from PSRAM
//! through the cache, whose miss latency is far longer than any window), whether plain loads
//! back to back have a hazard of their own that nobody has reported, and whether the fault
//! needs other bus traffic (Wi-Fi, DMA to the I2S speaker). The boot self-test
//! ([`crate::app::boot_self_test`]) therefore runs a real matmul on both cores several times
//! and falls back to one core, or to the portable kernel, on any difference.
//!
//! # Shape
//!
//! Chunks of 16 values; `c = n/16 = 2p + r`. The odd chunk (if any) goes to q4/q5 first; the
//! pairs run through a two-pair ring, q0/q1 for even chunks and q2/q3 for odd ones. Each loop
//! iteration multiplies the pair loaded by the previous iteration (zeros the first time) and
//! loads the next one into the registers it just read; the epilogue multiplies what the last
//! iteration loaded. Every register is read 5 or more instructions after its load.
//!
//! ```text
//!     srli    cnt, n, 5                  ; p = pairs of chunks
//!     extui   odd, n, 4, 1               ; r = 1 when the chunk count is odd
//!     ee.zero.q q4                       ; odd chunk absent: q4 = 0 makes its MAC add 0
//!     loopgtz odd, 1f                    ; runs once when r = 1
//!     ee.vld.128.ip q4, a, 16            ;   odd chunk of a
//!     ee.vld.128.ip q5, b, 16            ;   odd chunk of b
//! 1:  ee.zero.accx
//!     ee.zero.q q0                       ; the first iteration's MACs add 0
//!     ee.zero.q q2
//!     loopgtz cnt, 2f                    ; p iterations, skipped when p = 0
//!     ee.vmulas.s8.accx q0, q1           ;   previous even chunk
//!     ee.vld.128.ip q0, a, 16            ;   next even chunk: read 6 instructions later
//!     ee.vld.128.ip q1, b, 16            ;                     read 5 instructions later
//!     ee.vmulas.s8.accx q2, q3           ;   previous odd chunk
//!     ee.vld.128.ip q2, a, 16            ;   next odd chunk: read 6 instructions later
//!     ee.vld.128.ip q3, b, 16            ;                    read 5 instructions later
//!     nop                                ;   keeps q1/q3 five instructions from their use
//! 2:  ee.vmulas.s8.accx q0, q1           ; last even chunk
//!     ee.vmulas.s8.accx q4, q5           ; odd chunk (or 0)
//!     nop                                ; keeps q3 five instructions from its load
//!     ee.vmulas.s8.accx q2, q3           ; last odd chunk
//!     nop                                ; two instructions between the last MAC
//!     nop                                ; and reading ACCX
//!     rur.accx_0 out                     ; ACCX bits 31..0
//! ```
//!
//! It reads exactly `n` bytes of each operand and nothing past them. Instructions for one
//! group (counted by the interpreter, see the `pie_kernel` tests): `15 + 7p + 2r`, i.e. 22 for
//! a group of 32 values and 29 for a group of 64 (the earlier hazardous shape: 12 and 16).
//! With `n = 0` both loops are skipped and the result is 0 without any read.
//!
//! # Cost (from the interpreter; `cargo test --release --test pie_kernel cost_figures -- --nocapture`)
//!
//! * 32-value group: 22 instructions, 22 cycles; 64-value group: 29 and 29 (one cycle per
//!   instruction, loads from internal SRAM, zero-overhead loop, nops included).
//! * badge-6m per token (dim 224, hidden 768, 8 layers, kv_dim 112, vocab 1024; group 32 since
//!   64 does not divide 224): 5 562 368 weights = 173 824 group dots. Kernel alone: 3 824 128
//!   cycles = 15.9 ms at 240 MHz (the hazardous shape: 2 085 888 = 8.7 ms); with an assumed
//!   6-cycle call and 8 cycles of per-group scale work: 6 257 664 cycles = 26.1 ms, about 38
//!   tokens/s of matmul compute if the weights were in internal SRAM (hazardous shape: 18.8
//!   ms, 53 tokens/s).
//! * They are not (5.6 MB vs 512 KB): streaming 6 257 664 bytes (int8 + f32 scales) per token
//!   from PSRAM at the ~44 MB/s reported for the S3 takes ~142 ms, about 7 tokens/s, with
//!   either kernel. Even if compute and streaming did not overlap at all, the safe kernel
//!   costs 7.3 ms of 161 ms per token (6.21 → 5.94 tokens/s, -4.3 %); as far as they overlap it
//!   costs nothing: memory bandwidth, not the kernel, bounds tokens per second.
//!
//! # Registers
//!
//! Rust's Xtensa `asm!` knows the register classes `reg`, `freg` and `breg` only: the PIE
//! vector registers `q0`..`q7` and the accumulator ACCX can be neither operands nor clobbers.
//! The template therefore names `q0`..`q5` literally; the compiler never allocates them, so
//! nothing compiled by rustc lives in them. Other hand-written assembly that keeps values in
//! q0..q5/ACCX across a call to this kernel would see them clobbered.
//!
//! The loop also overwrites the loop registers LBEG/LEND/LCOUNT, which `asm!` cannot declare
//! either. Zero-overhead loops do not nest, so the kernel must not be inlined into a
//! compiler-generated hardware loop: `dot_i8_pie` is `#[inline(never)]`, and hardware-loop
//! formation never spans a loop containing a call.
//!
//! # Why `rur.accx_0` alone is exact
//!
//! ACCX is 40 bits wide; `rur.accx_0` returns bits 31..0 and `rur.accx_1` bits 39..32. Each
//! int8 product lies in [-16256, 16384] (the extreme is -128·-128 = 2^14), so a sum of `n` of
//! them has magnitude at most `n · 2^14`. With `n ≤ 2^16` ([`PIE_MAX_LEN`]) that is at most
//! 2^30 < 2^31: the 40-bit value is a sign extension of its low 32 bits, ACCX never comes near
//! its ±2^39 saturation, and reading bits 31..0 as an `i32` gives the exact sum. A Q8_0 group
//! of 32 or 64 values is far inside this (≤ 2^20 in magnitude).
//!
//! # Preconditions (for `dot_i8_pie`; checked by [`check_pie_preconditions`])
//!
//! * both pointers 16-byte aligned: `ee.vld.128.ip` silently ignores the low four address bits,
//!   so a misaligned pointer reads the wrong bytes (partly outside the operand) with no fault;
//! * `n` a multiple of 16 with `16 ≤ n ≤ 2^16` (a length that is not a multiple of 16 would
//!   silently drop its tail). `n = 0` would be harmless now (nothing read, result 0) but stays
//!   excluded, and the safe wrapper `dot_i8_pie_slices` returns 0 for empty slices without
//!   entering the assembly;
//! * not from an interrupt handler: interrupt entry does not save q0..q7 or ACCX, so an
//!   interrupted kernel, or a kernel in a handler, corrupts the other's PIE state;
//! * PIE (coprocessor 3) enabled in CPENABLE on the calling core, which ESP-IDF does lazily per
//!   task and which bare-metal start-up code must ensure.

/// Expands to the assembly template as a string literal, so that `asm!` (which needs a literal
/// or a macro producing one) and [`PIE_DOT_ASM`] share one source of text.
///
/// Operands: `{a}` and `{b}` the operand pointers (advanced by the kernel), `{n}` the length,
/// `{cnt}` and `{odd}` scratch registers, `{out}` the result.
macro_rules! pie_dot_asm {
    () => {
        "srli {cnt}, {n}, 5
extui {odd}, {n}, 4, 1
ee.zero.q q4
loopgtz {odd}, 1f
ee.vld.128.ip q4, {a}, 16
ee.vld.128.ip q5, {b}, 16
1:
ee.zero.accx
ee.zero.q q0
ee.zero.q q2
loopgtz {cnt}, 2f
ee.vmulas.s8.accx q0, q1
ee.vld.128.ip q0, {a}, 16
ee.vld.128.ip q1, {b}, 16
ee.vmulas.s8.accx q2, q3
ee.vld.128.ip q2, {a}, 16
ee.vld.128.ip q3, {b}, 16
nop
2:
ee.vmulas.s8.accx q0, q1
ee.vmulas.s8.accx q4, q5
nop
ee.vmulas.s8.accx q2, q3
nop
nop
rur.accx_0 {out}"
    };
}

/// The exact template text of the `asm!` block in `dot_i8_pie` (compiled on every target, so
/// the host interpreter can run it). Placeholders: `{a}`, `{b}`, `{n}`, `{cnt}`, `{odd}`,
/// `{out}`.
pub const PIE_DOT_ASM: &str = pie_dot_asm!();

/// Largest `n` for which the 32-bit read of ACCX is exact (see the module documentation).
pub const PIE_MAX_LEN: usize = 1 << 16;

/// Required alignment of both operand pointers, in bytes.
pub const PIE_ALIGN: usize = 16;

/// Which operand of the dot product a [`PieError`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The first operand (`a`).
    A,
    /// The second operand (`b`).
    B,
}

/// A violated precondition of the PIE kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieError {
    /// An operand pointer is not 16-byte aligned (`ee.vld.128.ip` would read the wrong bytes).
    Misaligned {
        /// Which operand.
        operand: Operand,
        /// Its address.
        addr: usize,
    },
    /// `n` is 0: the kernel always processes at least one chunk.
    Empty,
    /// `n` is not a multiple of 16.
    NotMultipleOf16(usize),
    /// `n` exceeds [`PIE_MAX_LEN`], past which the 32-bit result could overflow.
    TooLong(usize),
}

impl core::fmt::Display for PieError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PieError::Misaligned { operand, addr } => {
                write!(
                    f,
                    "PIE dot: operand {operand:?} at {addr:#x} is not 16-byte aligned"
                )
            }
            PieError::Empty => write!(f, "PIE dot: length 0"),
            PieError::NotMultipleOf16(n) => {
                write!(f, "PIE dot: length {n} is not a multiple of 16")
            }
            PieError::TooLong(n) => write!(f, "PIE dot: length {n} exceeds {PIE_MAX_LEN}"),
        }
    }
}

/// Checks the preconditions of `dot_i8_pie` for operands at `a` and `b` of `n` values each.
///
/// It checks alignment and length only; the caller must still guarantee that `n` bytes are
/// readable at each pointer and that the call is not made from an interrupt handler.
pub fn check_pie_preconditions(a: *const i8, b: *const i8, n: usize) -> Result<(), PieError> {
    let (addr_a, addr_b) = (a as usize, b as usize);
    if !addr_a.is_multiple_of(PIE_ALIGN) {
        return Err(PieError::Misaligned {
            operand: Operand::A,
            addr: addr_a,
        });
    }
    if !addr_b.is_multiple_of(PIE_ALIGN) {
        return Err(PieError::Misaligned {
            operand: Operand::B,
            addr: addr_b,
        });
    }
    if n == 0 {
        return Err(PieError::Empty);
    }
    if !n.is_multiple_of(16) {
        return Err(PieError::NotMultipleOf16(n));
    }
    if n > PIE_MAX_LEN {
        return Err(PieError::TooLong(n));
    }
    Ok(())
}

/// Sum of `a[i] * b[i]` for `i < n` on the ESP32-S3 vector unit.
///
/// # Safety
///
/// * `a` and `b` are 16-byte aligned and valid for reads of `n` bytes;
/// * `n` is a multiple of 16 with `16 ≤ n ≤ 2^16` (see [`check_pie_preconditions`], asserted
///   in debug builds);
/// * not called from an interrupt handler, and PIE is enabled on this core;
/// * no surrounding hand-written assembly expects q0..q5, ACCX or the loop registers to survive.
#[cfg(all(feature = "esp32s3", target_arch = "xtensa"))]
#[inline(never)]
pub unsafe fn dot_i8_pie(a: *const i8, b: *const i8, n: usize) -> i32 {
    debug_assert_eq!(check_pie_preconditions(a, b, n), Ok(()));
    let out: i32;
    // SAFETY: the caller guarantees the preconditions above. The template reads exactly `n`
    // bytes from each pointer and writes no memory; q0..q5, ACCX and LBEG/LEND/LCOUNT are
    // clobbered but cannot be declared (see the module documentation).
    #[cfg(not(badge_check_no_asm))]
    unsafe {
        core::arch::asm!(
            pie_dot_asm!(),
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            n = in(reg) n,
            cnt = out(reg) _,
            odd = out(reg) _,
            out = lateout(reg) out,
            options(nostack, readonly),
        );
    }
    // Only in scripts/check-firmware.sh (upstream rustc has no Xtensa `asm!`): the portable
    // sum stands in, so that everything around the kernel compiles.
    // SAFETY: as above, `a` and `b` are readable for `n` bytes.
    #[cfg(badge_check_no_asm)]
    unsafe {
        out = super::dot_i8_portable(
            core::slice::from_raw_parts(a, n),
            core::slice::from_raw_parts(b, n),
        );
    }
    out
}

/// Safe slice form of `dot_i8_pie`: same result as
/// [`dot_i8_portable`](super::dot_i8_portable).
///
/// Empty slices give 0 without entering the assembly. Operands that break the alignment or
/// length preconditions fail a `debug_assert!` in debug builds and fall back to the portable
/// kernel in release builds (so the function stays sound and correct, only slower). Must not be
/// called from an interrupt handler.
#[cfg(all(feature = "esp32s3", target_arch = "xtensa"))]
#[inline]
pub fn dot_i8_pie_slices(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_i8_pie: operands differ in length");
    if a.is_empty() {
        return 0;
    }
    let checked = check_pie_preconditions(a.as_ptr(), b.as_ptr(), a.len());
    debug_assert_eq!(checked, Ok(()), "dot_i8_pie: precondition violated");
    if checked.is_err() {
        return super::dot_i8_portable(a, b);
    }
    // SAFETY: alignment and length were just checked; slices are readable for their length.
    unsafe { dot_i8_pie(a.as_ptr(), b.as_ptr(), a.len()) }
}
