//! The ESP32-S3 PIE group-dot kernel, run through the host interpreter of its own template.

use badge_firmware::kernel::dot_i8_portable;
use badge_firmware::kernel::pie::{
    check_pie_preconditions, Operand, PieError, PIE_DOT_ASM, PIE_MAX_LEN,
};
use badge_firmware::kernel::pie_interp::{
    bind, dot_program, parse, run_dot, simulate_dot, Insn, InterpError, LoopKind, Machine,
    ACCX_MAX, ACCX_MIN, DOT_BINDINGS,
};
use proptest::prelude::*;

/// Small deterministic generator (xorshift64*), so the sweeps need no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
}

fn run(text: &str, m: &mut Machine, max_steps: u64) -> Result<(), InterpError> {
    let prog = parse(text)?;
    m.run(&prog, max_steps).map(|_| ())
}

#[test]
fn every_length_16_to_512_matches_portable() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in (16..=512).step_by(16) {
        for _ in 0..4 {
            let (a, b) = (rng.bytes(n), rng.bytes(n));
            let r = simulate_dot(&a, &b, 0, 0).unwrap();
            assert_eq!(r.value, dot_i8_portable(&a, &b), "n = {n}");
            assert_eq!(r.accx, i64::from(r.value));
            // 6 instructions before the loop, 2 per iteration, 4 after it.
            assert_eq!(r.stats.instructions, 8 + n as u64 / 8, "n = {n}");
            assert_eq!(r.stats.cycles, r.stats.instructions);
            assert_eq!(r.stats.loads, 2 * n as u64 / 16);
            assert_eq!(r.stats.macs, n as u64 / 16);
        }
    }
}

#[test]
fn reads_exactly_n_bytes_and_advances_pointers() {
    let mut rng = Rng(7);
    let (a, b) = (rng.bytes(96), rng.bytes(96));
    let mut m = Machine::new(1024);
    let (pa, pb) = (m.mem_base + 64, m.mem_base + 512);
    let as_u8 = |s: &[i8]| s.iter().map(|&v| v as u8).collect::<Vec<u8>>();
    m.write(pa, &as_u8(&a)).unwrap();
    m.write(pb, &as_u8(&b)).unwrap();
    // Poison the 16 bytes after each operand: a read past the end would change the sum.
    m.write(pa + 96, &[0x7F; 16]).unwrap();
    m.write(pb + 96, &[0x7F; 16]).unwrap();
    let prog = dot_program().unwrap();
    let r = run_dot(&mut m, &prog, pa, pb, 96).unwrap();
    assert_eq!(r.value, dot_i8_portable(&a, &b));
    assert_eq!((r.a_end, r.b_end), (pa + 96, pb + 96));
    // Operands at the very end of memory: any read past them would be out of range.
    let mut m = Machine::new(192);
    let (pa, pb) = (m.mem_base, m.mem_base + 96);
    m.write(pa, &as_u8(&a)).unwrap();
    m.write(pb, &as_u8(&b)).unwrap();
    let r = run_dot(&mut m, &prog, pa, pb, 96).unwrap();
    assert_eq!(r.value, dot_i8_portable(&a, &b));
}

proptest! {
    #[test]
    fn random_lengths_and_aligned_placements(
        chunks in 1usize..=32,
        seed in any::<u64>(),
        gap_a in 0u32..8,
        gap_b in 0u32..8,
    ) {
        let n = chunks * 16;
        let mut rng = Rng(seed | 1);
        let (a, b) = (rng.bytes(n), rng.bytes(n));
        let mut m = Machine::new(2 * n + 512);
        let pa = m.mem_base + 16 * gap_a;
        let pb = m.mem_base + 256 + n as u32 + 16 * gap_b;
        m.write(pa, &a.iter().map(|&v| v as u8).collect::<Vec<_>>()).unwrap();
        m.write(pb, &b.iter().map(|&v| v as u8).collect::<Vec<_>>()).unwrap();
        let prog = dot_program().unwrap();
        let r = run_dot(&mut m, &prog, pa, pb, n as u32).unwrap();
        prop_assert_eq!(r.value, dot_i8_portable(&a, &b));
        prop_assert!(check_pie_preconditions((16 * gap_a as usize) as *const i8,
            (16 + 16 * gap_b as usize) as *const i8, n).is_ok());
    }

    #[test]
    fn misaligned_operands_give_wrong_answers_and_are_rejected(
        chunks in 1usize..=8,
        seed in any::<u64>(),
        mis in 1u32..16,
        which_b in any::<bool>(),
    ) {
        let n = chunks * 16;
        let mut rng = Rng(seed | 1);
        // Nonzero operands, so the bytes shifted in from around them always matter.
        let nz = |v: i8| if v == 0 { 1 } else { v };
        let a: Vec<i8> = rng.bytes(n).into_iter().map(nz).collect();
        let b: Vec<i8> = rng.bytes(n).into_iter().map(nz).collect();
        let (ma, mb) = if which_b { (0, mis) } else { (mis, 0) };
        let r = simulate_dot(&a, &b, ma, mb).unwrap();
        // The load ignored the low bits: it read from the aligned address below the operand.
        let want = dot_i8_portable(&a, &b);
        let shifted = {
            // What the hardware actually multiplied: the misaligned operand read from
            // `addr & !15`, i.e. `mis` bytes of fill (0x5A) followed by its first n - mis bytes.
            let (m_op, other) = if which_b { (&b, &a) } else { (&a, &b) };
            let mut seen = vec![0x5Ai8; mis as usize];
            seen.extend_from_slice(&m_op[..n - mis as usize]);
            dot_i8_portable(&seen, other)
        };
        prop_assert_eq!(r.value, shifted);
        prop_assert_ne!(r.value, want);
        let addr = 0x3FC8_8000usize + mis as usize;
        let (pa, pb) = if which_b { (0x1000, addr) } else { (addr, 0x1000) };
        let expected = PieError::Misaligned {
            operand: if which_b { Operand::B } else { Operand::A },
            addr,
        };
        prop_assert_eq!(check_pie_preconditions(pa as *const i8, pb as *const i8, n), Err(expected));
    }
}

#[test]
fn misalignment_sweep_every_offset() {
    let mut rng = Rng(42);
    let a = rng.bytes(64);
    let b = rng.bytes(64);
    let want = dot_i8_portable(&a, &b);
    assert_eq!(simulate_dot(&a, &b, 0, 0).unwrap().value, want);
    for mis in 1..16 {
        assert_ne!(simulate_dot(&a, &b, mis, 0).unwrap().value, want, "a+{mis}");
        assert_ne!(simulate_dot(&a, &b, 0, mis).unwrap().value, want, "b+{mis}");
        assert_ne!(
            simulate_dot(&a, &b, mis, mis).unwrap().value,
            want,
            "both+{mis}"
        );
    }
}

#[test]
fn precondition_checker() {
    let p = 0x3FC8_8000usize as *const i8;
    assert_eq!(check_pie_preconditions(p, p, 16), Ok(()));
    assert_eq!(check_pie_preconditions(p, p, PIE_MAX_LEN), Ok(()));
    assert_eq!(check_pie_preconditions(p, p, 0), Err(PieError::Empty));
    assert_eq!(
        check_pie_preconditions(p, p, 40),
        Err(PieError::NotMultipleOf16(40))
    );
    assert_eq!(
        check_pie_preconditions(p, p, PIE_MAX_LEN + 16),
        Err(PieError::TooLong(PIE_MAX_LEN + 16))
    );
    let q = 0x3FC8_8008usize as *const i8;
    assert_eq!(
        check_pie_preconditions(q, p, 32),
        Err(PieError::Misaligned {
            operand: Operand::A,
            addr: 0x3FC8_8008
        })
    );
    assert!(matches!(
        check_pie_preconditions(p, q, 32),
        Err(PieError::Misaligned {
            operand: Operand::B,
            ..
        })
    ));
}

#[test]
fn extreme_values() {
    for n in [16usize, 32, 64, 512, 4096, PIE_MAX_LEN] {
        let a = vec![-128i8; n];
        let r = simulate_dot(&a, &a, 0, 0).unwrap();
        assert_eq!(r.value, dot_i8_portable(&a, &a));
        assert_eq!(i64::from(r.value), n as i64 * 16384);
        let b = vec![127i8; n];
        let r = simulate_dot(&a, &b, 0, 0).unwrap();
        assert_eq!(r.value, dot_i8_portable(&a, &b));
        assert_eq!(i64::from(r.value), -(n as i64) * 16256);
    }
    // At the length limit the sum is exactly 2^30: ACCX bits 39..31 are sign copies, so bits
    // 31..0 alone are the value.
    let a = vec![-128i8; PIE_MAX_LEN];
    let r = simulate_dot(&a, &a, 0, 0).unwrap();
    assert_eq!(r.accx, 1 << 30);
    assert_eq!(r.value, 1 << 30);
}

#[test]
fn length_zero_reads_one_chunk_anyway() {
    // n = 0: srli gives 0, addi makes the count -1, loopgtz skips the loop -- but the preloads
    // and the final MAC still multiply the first chunk. Hence the precondition n >= 16 and the
    // safe wrapper's early return for empty slices.
    let mut rng = Rng(3);
    let (a, b) = (rng.bytes(16), rng.bytes(16));
    let mut m = Machine::new(256);
    let (pa, pb) = (m.mem_base, m.mem_base + 128);
    m.write(pa, &a.iter().map(|&v| v as u8).collect::<Vec<_>>())
        .unwrap();
    m.write(pb, &b.iter().map(|&v| v as u8).collect::<Vec<_>>())
        .unwrap();
    let prog = dot_program().unwrap();
    let r = run_dot(&mut m, &prog, pa, pb, 0).unwrap();
    assert_eq!(r.value, dot_i8_portable(&a, &b));
    assert_eq!(r.a_end, pa + 16);
    assert_eq!(r.stats.instructions, 10);
}

#[test]
fn loop_counts_including_zero_and_negative() {
    let body =
        |kind: &str| format!("movi a2, 0\n{kind} a4, 1f\naddi a2, a2, 1\naddi a3, a3, 2\n1:\nnop");
    for kind in ["loopnez", "loopgtz"] {
        for count in [0u32, 1, 2, 3, 100, 5000] {
            let mut m = Machine::new(16);
            m.a[4] = count;
            run(&body(kind), &mut m, 100_000).unwrap();
            assert_eq!(m.a[2], count, "{kind} {count}");
            assert_eq!(m.a[3], 2 * count);
            if count > 0 {
                assert_eq!(m.lcount, 0);
            }
            // movi + loop + 2 per iteration + nop
            assert_eq!(m.stats.instructions, 3 + 2 * u64::from(count));
        }
    }
    // loopgtz skips a negative count; loopnez would run it 2^32 - 5 times.
    let mut m = Machine::new(16);
    m.a[4] = -5i32 as u32;
    run(&body("loopgtz"), &mut m, 100).unwrap();
    assert_eq!(m.a[2], 0);
    let mut m = Machine::new(16);
    m.a[4] = -5i32 as u32;
    assert_eq!(
        run(&body("loopnez"), &mut m, 1000),
        Err(InterpError::StepLimit(1000))
    );
    // Loops do not nest.
    let nested = "movi a4, 2\nmovi a5, 2\nloopnez a4, 1f\nloopnez a5, 2f\nnop\n2:\nnop\n1:\nnop";
    assert!(matches!(
        run(nested, &mut Machine::new(16), 100),
        Err(InterpError::NestedLoop { .. })
    ));
    // Body size limits.
    assert!(parse("loopnez a2, 1f\n1:\nnop").is_err());
    let long: String = core::iter::once("loopnez a2, 1f".to_string())
        .chain((0..86).map(|_| "nop".to_string()))
        .chain(["1:".to_string()])
        .collect::<Vec<_>>()
        .join("\n");
    assert!(parse(&long).is_err(), "258-byte body accepted");
    let ok: String = long.replacen("nop\n", "", 1);
    assert!(parse(&ok).is_ok(), "255-byte body rejected");
}

/// Loads 16 copies of `x` into q0 and of `y` into q1 from memory.
fn setup_q(m: &mut Machine, x: i8, y: i8) -> String {
    let base = m.mem_base;
    m.write(base, &[x as u8; 16]).unwrap();
    m.write(base + 16, &[y as u8; 16]).unwrap();
    m.a[8] = base;
    "ee.vld.128.ip q0, a8, 16\nee.vld.128.ip q1, a8, 16\n".to_string()
}

#[test]
fn accx_saturates_at_40_bits() {
    // Set ACCX = 2^39 - 1001 with wur, add 16 * 16384: clamps at 2^39 - 1.
    let mut m = Machine::new(64);
    let mut p = setup_q(&mut m, -128, -128);
    p += "movi a2, -1001\nwur.accx_0 a2\nmovi a2, 127\nwur.accx_1 a2\n";
    p += "ee.vmulas.s8.accx q0, q1\nnop\nnop\nrur.accx_0 a3\nrur.accx_1 a4";
    run(&p, &mut m, 100).unwrap();
    assert_eq!(m.accx(), ACCX_MAX);
    assert_eq!((m.a[3], m.a[4]), (0xFFFF_FFFF, 0x7F));

    // Set ACCX = -2^39 + 1000, add 16 * -16256: clamps at -2^39.
    let mut m = Machine::new(64);
    let mut p = setup_q(&mut m, -128, 127);
    p += "movi a2, 1000\nwur.accx_0 a2\nmovi a2, 128\nwur.accx_1 a2\n";
    p += "ee.vmulas.s8.accx q0, q1\nnop\nnop\nrur.accx_0 a3\nrur.accx_1 a4";
    run(&p, &mut m, 100).unwrap();
    assert_eq!(m.accx(), ACCX_MIN);
    assert_eq!((m.a[3], m.a[4]), (0, 0x80));

    // A long synthetic run from zero: 2^21 + 100 MACs of 2^18 each would reach 2^39 + 100·2^18;
    // ACCX stops at 2^39 - 1 instead of wrapping.
    let mut m = Machine::new(64);
    let mut p = setup_q(&mut m, -128, -128);
    p += "ee.zero.accx\nloopnez a5, 1f\nee.vmulas.s8.accx q0, q1\n1:\nnop\nnop\n";
    p += "rur.accx_0 a3\nrur.accx_1 a4";
    m.a[5] = (1 << 21) + 100;
    run(&p, &mut m, 1 << 23).unwrap();
    assert_eq!(m.accx(), ACCX_MAX);
    assert_eq!((m.a[3], m.a[4]), (0xFFFF_FFFF, 0x7F));
    // ...and it is sticky only as a value: a negative MAC moves it down again.
    let mut p = setup_q(&mut m, -128, 127);
    p += "ee.vmulas.s8.accx q0, q1\nnop\nnop\nrur.accx_0 a3";
    run(&p, &mut m, 100).unwrap();
    assert_eq!(m.accx(), ACCX_MAX - 16 * 16256);

    // Values beyond 32 bits: 40-bit sign extension from rur.accx_1.
    let mut m = Machine::new(64);
    run(
        "movi a2, 5\nwur.accx_0 a2\nmovi a2, 0xff\nwur.accx_1 a2\nrur.accx_1 a3",
        &mut m,
        10,
    )
    .unwrap();
    assert_eq!(m.accx(), -(1i64 << 32) + 5);
    assert_eq!(m.a[3], 0xFF);
}

#[test]
fn fused_mac_uses_old_registers_then_loads() {
    let mut m = Machine::new(64);
    m.write(m.mem_base, &[3; 16]).unwrap();
    m.write(m.mem_base + 16, &[5; 16]).unwrap();
    m.write(m.mem_base + 32, &[7; 16]).unwrap();
    m.a[2] = m.mem_base;
    let p = "ee.zero.accx\nee.vld.128.ip q0, a2, 16\nee.vld.128.ip q1, a2, 16\n\
             ee.vmulas.s8.accx.ld.ip q0, a2, 16, q0, q1\nnop\nnop\nrur.accx_0 a6";
    run(p, &mut m, 100).unwrap();
    assert_eq!(m.a[6], 16 * 15);
    assert_eq!(m.q[0], [7; 16]);
    assert_eq!(m.a[2], m.mem_base + 48);
    // Immediate range and step of the fused form.
    assert!(parse("ee.vmulas.s8.accx.ld.ip q0, a2, 512, q0, q1").is_err());
    assert!(parse("ee.vmulas.s8.accx.ld.ip q0, a2, 8, q0, q1").is_err());
    assert!(parse("ee.vmulas.s8.accx.ld.ip q0, a2, -512, q0, q1").is_ok());
    assert!(parse("ee.vld.128.ip q5, a6, -2048").is_ok());
    assert!(parse("ee.vld.128.ip q8, a6, 16").is_err());
}

#[test]
fn accx_read_latency_is_enforced() {
    let no_nops = PIE_DOT_ASM.replace("nop\n", "");
    let prog = parse(&bind(&no_nops, &DOT_BINDINGS).unwrap()).unwrap();
    let mut m = Machine::new(256);
    let base = m.mem_base;
    assert!(matches!(
        run_dot(&mut m, &prog, base, base + 128, 32),
        Err(InterpError::AccxLatency { distance: 0, .. })
    ));
    let mut m = Machine::new(256);
    m.strict_accx_latency = false;
    let r = run_dot(&mut m, &prog, base, base + 128, 32).unwrap();
    assert_eq!(r.stats.instructions, 10);
    assert_eq!(r.stats.cycles, 12);
}

#[test]
fn unknown_instructions_and_unbound_placeholders_are_errors() {
    assert!(matches!(
        parse("nop\nee.vmulas.s16.accx q0, q1"),
        Err(InterpError::UnknownInstruction { line: 2, .. })
    ));
    assert!(matches!(
        parse("ee.src.q q0, q1, q2"),
        Err(InterpError::UnknownInstruction { .. })
    ));
    assert!(matches!(
        parse("loopnez a2, 3f\nnop\n1:"),
        Err(InterpError::Parse { .. })
    ));
    assert!(matches!(parse("foo: nop"), Err(InterpError::Parse { .. })));
    assert!(matches!(
        bind(PIE_DOT_ASM, &DOT_BINDINGS[..4]),
        Err(InterpError::Template(_))
    ));
    assert_eq!(bind("{{x}} {r}", &[("r", "a9")]).unwrap(), "{x} a9");
}

#[test]
fn template_has_the_required_shape() {
    let prog = dot_program().unwrap();
    let ops = &prog.insns;
    assert_eq!(
        ops.first(),
        Some(&Insn::Srli {
            ar: 5,
            at: 4,
            sa: 4
        })
    );
    assert!(ops.contains(&Insn::ZeroAccx));
    assert!(ops.iter().any(|i| matches!(
        i,
        Insn::Loop {
            kind: LoopKind::Gtz,
            ..
        }
    )));
    assert!(ops
        .iter()
        .any(|i| matches!(i, Insn::VmulasS8AccxLdIp { .. })));
    let n = ops.len();
    assert_eq!(ops[n - 4], Insn::VmulasS8Accx { qx: 0, qy: 1 });
    assert_eq!(&ops[n - 3..n - 1], &[Insn::Nop, Insn::Nop]);
    assert_eq!(ops[n - 1], Insn::RurAccx { ar: 6, hi: false });
    // The loop body and its end label: two instructions, then the final plain MAC.
    let (at, end) = ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| match op {
            Insn::Loop { end, .. } => Some((i, *end)),
            _ => None,
        })
        .unwrap();
    assert_eq!(end - at - 1, 2);
    assert_eq!(end, n - 4);
}

// ---- cost figures -------------------------------------------------------------------------

/// Cycles around each group dot outside the template, assumed (not measured): the call
/// (`#[inline(never)]`: argument moves 3, call8 1, entry 1, retw.n 1).
const CALL_CYCLES: u64 = 6;
/// Per-group scalar work assumed: load the weight scale and the activation scale (2), convert
/// the i32 to float (1), two float multiply/adds (2), advance pointers and loop (3).
const GROUP_SCALAR_CYCLES: u64 = 8;
const CLOCK_HZ: f64 = 240e6;
/// Effective PSRAM streaming rate reported for an ESP32-S3 (shared/reference/anchors.md).
const PSRAM_BYTES_PER_S: f64 = 44e6;

fn kernel_stats(n: usize) -> (u64, u64) {
    let a = vec![1i8; n];
    let r = simulate_dot(&a, &a, 0, 0).unwrap();
    (r.stats.instructions, r.stats.cycles)
}

/// badge-6m matmul weights per token: (rows, cols) of each matrix.
fn badge_6m_matrices() -> Vec<(usize, usize, usize)> {
    let (dim, hidden, layers, kv_dim, vocab) = (224, 768, 8, 112, 1024);
    let per_layer = [
        (dim, dim),
        (kv_dim, dim),
        (kv_dim, dim),
        (dim, dim),
        (hidden, dim),
        (hidden, dim),
        (dim, hidden),
    ];
    let mut out: Vec<(usize, usize, usize)> =
        per_layer.iter().map(|&(r, c)| (r, c, layers)).collect();
    out.push((vocab, dim, 1));
    out
}

#[test]
fn cost_figures() {
    let (i64_, c64) = kernel_stats(64);
    let (i32_, c32) = kernel_stats(32);
    assert_eq!((i64_, c64), (16, 16));
    assert_eq!((i32_, c32), (12, 12));

    let group = 32;
    let mut weights = 0usize;
    let mut groups = 0usize;
    for (rows, cols, count) in badge_6m_matrices() {
        assert_eq!(cols % group, 0);
        weights += rows * cols * count;
        groups += rows * (cols / group) * count;
    }
    assert_eq!(weights, 5_562_368);
    assert_eq!(groups, 173_824);
    let kernel = groups as u64 * c32;
    let with_call = groups as u64 * (c32 + CALL_CYCLES);
    let total = groups as u64 * (c32 + CALL_CYCLES + GROUP_SCALAR_CYCLES);
    assert_eq!(kernel, 2_085_888);
    assert_eq!(total, 4_519_424);
    let ms = |c: u64| c as f64 / CLOCK_HZ * 1e3;
    println!("PIE group dot: {i64_} instructions / {c64} cycles per 64-value group");
    println!("PIE group dot: {i32_} instructions / {c32} cycles per 32-value group");
    println!("badge-6m matmuls per token: {weights} weights, {groups} groups of {group}");
    println!(
        "  kernel only:                {kernel} cycles = {:.2} ms at 240 MHz",
        ms(kernel)
    );
    println!(
        "  + call ({CALL_CYCLES}/group):         {with_call} cycles = {:.2} ms",
        ms(with_call)
    );
    println!(
        "  + scales/float ({GROUP_SCALAR_CYCLES}/group):  {total} cycles = {:.2} ms = {:.0} tokens/s (matmuls, weights in SRAM)",
        ms(total),
        CLOCK_HZ / total as f64
    );
    // Weights (5.6 MB) cannot live in the 512 KB internal SRAM: they stream from PSRAM.
    let bytes = weights + 4 * groups;
    let stream_ms = bytes as f64 / PSRAM_BYTES_PER_S * 1e3;
    println!(
        "  bytes streamed per token: {bytes} ({weights} int8 + {groups} f32 scales) = {stream_ms:.0} ms at 44 MB/s PSRAM = {:.1} tokens/s (memory bound)",
        1e3 / stream_ms
    );
}
