//! The ESP32-S3 PIE group-dot kernel, run through the host interpreter of its own template.

use badge_firmware::kernel::dot_i8_portable;
use badge_firmware::kernel::pie::{
    check_pie_preconditions, Operand, PieError, PIE_DOT_ASM, PIE_MAX_LEN,
};
use badge_firmware::kernel::pie_interp::{
    bind, dot_program, parse, run_dot, simulate_dot, simulate_dot_with, simulate_program,
    HazardMode, Hazards, Insn, InterpError, LoopKind, Machine, ACCX_MAX, ACCX_MIN, DOT_BINDINGS,
    LOAD_USE_WINDOW,
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
            // 8 instructions before the pair loop (+2 for an odd chunk), 7 per pair, 7 after.
            let (pairs, odd) = (n as u64 / 32, (n as u64 / 16) % 2);
            assert_eq!(r.stats.instructions, 15 + 7 * pairs + 2 * odd, "n = {n}");
            assert_eq!(r.stats.cycles, r.stats.instructions);
            assert_eq!(r.stats.loads, 2 * n as u64 / 16);
            // Two MACs per pair plus three in the epilogue (the first pair's add zeros).
            assert_eq!(r.stats.macs, 2 * pairs + 3);
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
        // The shifted bytes can sum to the right value by chance (seen once in CI): such a
        // case cannot show that the result is wrong, only that it is the shifted read's.
        if shifted != want {
            prop_assert_ne!(r.value, want);
        }
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
fn length_zero_reads_nothing() {
    // n = 0: both loop counts are 0, so no load runs and the MACs multiply zeroed registers.
    // (The precondition still excludes it and the safe wrapper never enters the assembly.)
    let mut m = Machine::new(16);
    m.mem.fill(0x7F);
    let prog = dot_program().unwrap();
    // Operand pointers outside memory: any load would be MemoryOutOfRange.
    let r = run_dot(&mut m, &prog, 0x1000, 0x2000, 0).unwrap();
    assert_eq!(r.value, 0);
    assert_eq!((r.a_end, r.b_end), (0x1000, 0x2000));
    assert_eq!(r.stats.loads, 0);
    assert_eq!(r.stats.instructions, 15);
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
    // Four instructions between the last load and the first use (the load-use rule).
    "ee.vld.128.ip q0, a8, 16\nee.vld.128.ip q1, a8, 16\nnop\nnop\nnop\nnop\n".to_string()
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
    // The manual's semantics, with the hazard rules off: this very pattern is what failed on
    // dual-core hardware (see `fused_load_into_a_mac_source_is_caught`).
    let mut m = Machine::new(64);
    m.hazards.mode = HazardMode::Ideal;
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
    let no_nops = PIE_DOT_ASM.replace("nop\nnop\nrur", "rur");
    assert_ne!(no_nops, PIE_DOT_ASM);
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
    assert_eq!(r.stats.instructions, 20);
    assert_eq!(r.stats.cycles, 22);
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
        bind(PIE_DOT_ASM, &DOT_BINDINGS[..5]),
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
            sa: 5
        })
    );
    assert!(ops.contains(&Insn::ZeroAccx));
    // No fused MAC+load at all, so none into its own source.
    assert!(!ops
        .iter()
        .any(|i| matches!(i, Insn::VmulasS8AccxLdIp { .. })));
    let loops: Vec<(usize, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Insn::Loop {
                kind: LoopKind::Gtz,
                end,
                ..
            } => Some((i, *end)),
            _ => None,
        })
        .collect();
    assert_eq!(loops.len(), 2, "the odd-chunk block and the pair loop");
    let (at, end) = loops[1];
    assert_eq!(end - at - 1, 7, "pair loop body");
    let n = ops.len();
    assert_eq!(end, n - 7);
    assert_eq!(&ops[n - 3..n - 1], &[Insn::Nop, Insn::Nop]);
    assert_eq!(ops[n - 1], Insn::RurAccx { ar: 6, hi: false });
}

// ---- the hazard rules ---------------------------------------------------------------------

/// The kernel this project shipped before the hazard rules: Espressif's single-core shape, a
/// fused MAC+load into its own source and a load used at once on the loop's wrap-around.
const HAZARDOUS_ASM: &str = "srli {cnt}, {n}, 4
ee.zero.accx
ee.vld.128.ip q0, {a}, 16
ee.vld.128.ip q1, {b}, 16
addi {cnt}, {cnt}, -1
loopgtz {cnt}, 2f
ee.vmulas.s8.accx.ld.ip q0, {a}, 16, q0, q1
ee.vld.128.ip q1, {b}, 16
2:
ee.vmulas.s8.accx q0, q1
nop
nop
rur.accx_0 {out}";

fn hazards(window: u64, mode: HazardMode) -> Hazards {
    Hazards { window, mode }
}

/// Runs `text` (a8 → 16 bytes each of 3s, 5s and 7s; a4 = `count`) under `h`.
fn run_small(text: &str, h: Hazards, count: u32) -> Result<Machine, InterpError> {
    let mut m = Machine::new(64);
    m.hazards = h;
    m.write(m.mem_base, &[3; 16]).unwrap();
    m.write(m.mem_base + 16, &[5; 16]).unwrap();
    m.write(m.mem_base + 32, &[7; 16]).unwrap();
    m.a[8] = m.mem_base;
    m.a[4] = count;
    run(text, &mut m, 1000)?;
    Ok(m)
}

#[test]
fn load_use_window_is_enforced_at_every_distance() {
    for window in 1..=6u64 {
        for gap in 0..=6u64 {
            // q1 is loaded, `gap` nops follow, then a MAC reads it at distance gap + 1.
            let nops = "nop\n".repeat(gap as usize);
            let text = format!(
                "ee.vld.128.ip q0, a8, 16\nee.vld.128.ip q1, a8, 16\n{nops}ee.vmulas.s8.accx q0, q1"
            );
            let r = run_small(&text, hazards(window, HazardMode::Reject), 0);
            if gap < window {
                // q0 is read first: it is one instruction older than q1.
                let e = r.expect_err("hazard not caught");
                let (reg, distance) = if gap + 1 < window {
                    (0, gap + 2)
                } else {
                    (1, gap + 1)
                };
                assert_eq!(
                    e,
                    InterpError::LoadUse {
                        line: 3 + gap as usize,
                        insn: "ee.vmulas.s8.accx q0, q1".into(),
                        reg,
                        load_line: 1 + reg as usize,
                        distance,
                        window,
                    },
                    "window {window} gap {gap}"
                );
                let msg = e.to_string();
                assert!(
                    msg.contains("ee.vmulas.s8.accx q0, q1") && msg.contains(&format!("q{reg}")),
                    "{msg}"
                );
            } else {
                let m = r.unwrap_or_else(|e| panic!("window {window} gap {gap}: {e}"));
                assert_eq!(m.accx(), 16 * 15);
            }
        }
    }
    assert_eq!(
        Hazards::default(),
        hazards(LOAD_USE_WINDOW, HazardMode::Reject)
    );
    assert_eq!(LOAD_USE_WINDOW, 4);
}

#[test]
fn load_use_window_is_counted_around_the_loop() {
    // The load is the body's last instruction, the use its first: 4 instructions apart in the
    // text the wrong way round, 1 apart on the executed path once the loop wraps.
    let text = "ee.vld.128.ip q0, a8, 16\nee.vld.128.ip q1, a8, 0\nnop\nnop\nnop\nnop\n\
                loopnez a4, 1f\nee.vmulas.s8.accx q0, q1\nnop\nnop\nnop\nee.vld.128.ip q1, a8, 0\n1:\nnop";
    // One iteration never wraps: clean.
    let m = run_small(text, Hazards::default(), 1).unwrap();
    assert_eq!(m.accx(), 16 * 15);
    // Two iterations: the second MAC reads q1 one instruction after the load.
    let e = run_small(text, Hazards::default(), 2).err().unwrap();
    assert!(
        matches!(
            &e,
            InterpError::LoadUse {
                line: 8,
                reg: 1,
                load_line: 12,
                distance: 1,
                ..
            }
        ),
        "{e:?}"
    );
    // A window of 0 is no rule at all (distance 1 is outside it).
    assert!(run_small(text, hazards(0, HazardMode::Reject), 2).is_ok());
    // Garbage: the second MAC multiplies whatever q1 held before the load landed.
    let m = run_small(text, hazards(4, HazardMode::Garbage), 2).unwrap();
    assert_eq!(m.stats.hazards, 1);
    assert_ne!(m.accx(), 2 * 16 * 15);
    // Ideal semantics: both iterations multiply 3·5.
    let m = run_small(text, hazards(4, HazardMode::Ideal), 2).unwrap();
    assert_eq!(m.accx(), 2 * 16 * 15);
}

#[test]
fn fused_load_into_a_mac_source_is_caught() {
    // q0 = 3s, q1 = 5s, a8 at the 7s.
    let pre = "ee.vld.128.ip q0, a8, 16\nee.vld.128.ip q1, a8, 16\nnop\nnop\nnop\nnop\n";
    for (insn, reg) in [
        ("ee.vmulas.s8.accx.ld.ip q0, a8, 16, q0, q1", 0u8),
        ("ee.vmulas.s8.accx.ld.ip q1, a8, 16, q0, q1", 1),
    ] {
        let text = format!("{pre}{insn}");
        let e = run_small(&text, Hazards::default(), 0).err().unwrap();
        assert_eq!(
            e,
            InterpError::FusedLoadIntoSource {
                line: 7,
                insn: insn.into(),
                reg
            }
        );
        assert!(e.to_string().contains(&format!("loads q{reg}")), "{e}");
        // Even the smallest window: this rule does not depend on distances.
        assert!(run_small(&text, hazards(1, HazardMode::Reject), 0).is_err());
        // Garbage: the MAC sees the newly loaded 7s in place of the source.
        let m = run_small(&text, hazards(4, HazardMode::Garbage), 0).unwrap();
        let want = if reg == 0 { 16 * 7 * 5 } else { 16 * 3 * 7 };
        assert_eq!(m.accx(), want, "{insn}");
        assert_eq!(m.stats.hazards, 1);
    }
    // Into a register that is not a source: clean, but its load half starts a window.
    let ok = format!("{pre}ee.vmulas.s8.accx.ld.ip q2, a8, 16, q0, q1");
    assert!(run_small(&ok, Hazards::default(), 0).is_ok());
    let early = format!("{ok}\nnop\nee.vmulas.s8.accx q2, q1");
    assert!(matches!(
        run_small(&early, Hazards::default(), 0),
        Err(InterpError::LoadUse {
            reg: 2,
            distance: 2,
            ..
        })
    ));
}

#[test]
fn zeroing_a_register_is_not_a_load() {
    let text = "ee.vld.128.ip q0, a8, 16\nee.zero.q q0\nee.vmulas.s8.accx q0, q1";
    let m = run_small(text, Hazards::default(), 0).unwrap();
    assert_eq!(m.accx(), 0);
    assert_eq!(m.q[0], [0; 16]);
}

#[test]
fn the_old_kernel_fails_the_rules_and_gives_wrong_sums_under_contention() {
    let prog = parse(&bind(HAZARDOUS_ASM, &DOT_BINDINGS).unwrap()).unwrap();
    let mut rng = Rng(11);
    let (a, b) = (rng.bytes(64), rng.bytes(64));
    // Ideal semantics: it is right.
    let r = simulate_program(&prog, hazards(4, HazardMode::Ideal), &a, &b, 0, 0).unwrap();
    assert_eq!(r.value, dot_i8_portable(&a, &b));
    // Window 4: the first fused MAC reads q0 four instructions after its preload.
    let e = simulate_program(&prog, Hazards::default(), &a, &b, 0, 0).unwrap_err();
    assert!(
        matches!(
            &e,
            InterpError::LoadUse {
                line: 7,
                reg: 0,
                distance: 4,
                ..
            }
        ),
        "{e:?}"
    );
    // Window 1: the preloads are far enough, the fused load into q0 is not allowed.
    let e = simulate_program(&prog, hazards(1, HazardMode::Reject), &a, &b, 0, 0).unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::FusedLoadIntoSource {
                line: 7,
                reg: 0,
                ..
            }
        ),
        "{e:?}"
    );
    // With hazards as garbage it is wrong on (nearly) every input, at every length.
    let mut wrong = 0;
    let mut total = 0;
    for n in (16..=512).step_by(16) {
        let (a, b) = (rng.bytes(n), rng.bytes(n));
        let r = simulate_program(&prog, hazards(4, HazardMode::Garbage), &a, &b, 0, 0).unwrap();
        assert!(r.stats.hazards > 0);
        total += 1;
        wrong += usize::from(r.value != dot_i8_portable(&a, &b));
    }
    assert!(wrong >= total - 1, "only {wrong} of {total} sums wrong");
}

/// Operand pairs that stress the sum: all extremes, mixed signs, alternating.
fn worst_cases(n: usize) -> Vec<(Vec<i8>, Vec<i8>)> {
    let alt = |x: i8, y: i8| {
        (0..n)
            .map(|i| if i % 2 == 0 { x } else { y })
            .collect::<Vec<i8>>()
    };
    vec![
        (vec![-128; n], vec![-128; n]),
        (vec![127; n], vec![127; n]),
        (vec![-128; n], vec![127; n]),
        (vec![127; n], vec![-128; n]),
        (vec![-127; n], vec![127; n]),
        (alt(-128, 127), alt(-128, -128)),
        (alt(127, -128), alt(127, -128)),
    ]
}

#[test]
fn the_kernel_is_clean_at_windows_2_3_4_and_matches_portable() {
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    for window in [2u64, 3, 4] {
        for n in (16..=512).step_by(16) {
            let mut cases = worst_cases(n);
            for _ in 0..3 {
                cases.push((rng.bytes(n), rng.bytes(n)));
            }
            for (a, b) in &cases {
                let want = dot_i8_portable(a, b);
                let r = simulate_dot_with(hazards(window, HazardMode::Reject), a, b, 0, 0)
                    .unwrap_or_else(|e| panic!("window {window} n {n}: {e}"));
                assert_eq!(r.value, want, "window {window} n {n}");
                // And under garbage semantics nothing was ever let through.
                let g =
                    simulate_dot_with(hazards(window, HazardMode::Garbage), a, b, 0, 0).unwrap();
                assert_eq!(
                    (g.value, g.stats.hazards),
                    (want, 0),
                    "window {window} n {n}"
                );
            }
        }
    }
}

#[test]
fn each_padding_nop_is_needed_at_window_4() {
    // Dropping the loop's nop, or the epilogue's first one, brings a load 4 instructions from
    // its use: fine at window 3, caught at window 4.
    let body_nop = "ee.vld.128.ip q3, {b}, 16\nnop\n2:";
    let epilogue_nop = "ee.vmulas.s8.accx q4, q5\nnop\n";
    for (what, cut) in [
        (body_nop, "ee.vld.128.ip q3, {b}, 16\n2:"),
        (epilogue_nop, "ee.vmulas.s8.accx q4, q5\n"),
    ] {
        assert!(PIE_DOT_ASM.contains(what));
        let text = PIE_DOT_ASM.replace(what, cut);
        let prog = parse(&bind(&text, &DOT_BINDINGS).unwrap()).unwrap();
        let (a, b) = (vec![3i8; 64], vec![-5i8; 64]);
        assert!(simulate_program(&prog, hazards(3, HazardMode::Reject), &a, &b, 0, 0).is_ok());
        let e = simulate_program(&prog, Hazards::default(), &a, &b, 0, 0).unwrap_err();
        assert!(
            matches!(e, InterpError::LoadUse { distance: 4, .. }),
            "{what}: {e:?}"
        );
    }
}

#[test]
fn back_to_back_calls_stay_clean() {
    // The loads of one call are far from the next call's reads, but the windows run on across
    // calls on one machine: two groups in a row through the same machine, as a matvec does.
    let mut rng = Rng(5);
    let (a, b) = (rng.bytes(64), rng.bytes(64));
    let mut m = Machine::new(512);
    let as_u8 = |s: &[i8]| s.iter().map(|&v| v as u8).collect::<Vec<u8>>();
    m.write(m.mem_base, &as_u8(&a)).unwrap();
    m.write(m.mem_base + 256, &as_u8(&b)).unwrap();
    let prog = dot_program().unwrap();
    let base = m.mem_base;
    for n in [64u32, 32, 16, 48] {
        let r = run_dot(&mut m, &prog, base, base + 256, n).unwrap();
        assert_eq!(r.value, dot_i8_portable(&a[..n as usize], &b[..n as usize]));
    }
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
    assert_eq!((i64_, c64), (29, 29));
    assert_eq!((i32_, c32), (22, 22));
    let old = parse(&bind(HAZARDOUS_ASM, &DOT_BINDINGS).unwrap()).unwrap();
    let ideal = hazards(4, HazardMode::Ideal);
    let ones = vec![1i8; 32];
    let c32_old = simulate_program(&old, ideal, &ones, &ones, 0, 0)
        .unwrap()
        .stats
        .cycles;
    assert_eq!(c32_old, 12);

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
    assert_eq!(kernel, 3_824_128);
    assert_eq!(total, 6_257_664);
    let total_old = groups as u64 * (c32_old + CALL_CYCLES + GROUP_SCALAR_CYCLES);
    assert_eq!(total_old, 4_519_424);
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
    // PSRAM bounds tokens/s with either kernel: streaming takes several times the compute.
    assert!(stream_ms > 5.0 * ms(total), "compute would matter");
    let serial = |c: u64| 1e3 / (stream_ms + ms(c));
    println!(
        "  hazard-free vs old shape: {:.2} vs {:.2} ms compute; if compute and streaming never overlapped: {:.2} vs {:.2} tokens/s ({:+.1} %); fully overlapped: {:.1} tokens/s both",
        ms(total),
        ms(total_old),
        serial(total),
        serial(total_old),
        (serial(total) / serial(total_old) - 1.0) * 100.0,
        1e3 / stream_ms
    );
    self_test_estimate(c32);
}

/// The boot self-test (`app::boot_self_test`) on badge-6m: layer 0's `w1` (768 × 224, groups
/// of 32) run [`badge_firmware::app::SELF_TEST_DUAL_RUNS`] times on both cores, once on one,
/// once with the portable kernel.
fn self_test_estimate(c32: u64) {
    use badge_firmware::app::SELF_TEST_DUAL_RUNS;
    let (rows, cols, group) = (768u64, 224u64, 32u64);
    let groups = rows * cols / group;
    let bytes = rows * cols + 4 * groups;
    // Each pass streams the matrix from PSRAM (two cores share the bus, so a dual pass is no
    // faster to stream); compute per core from the interpreter's count.
    let stream_ms = bytes as f64 / PSRAM_BYTES_PER_S * 1e3;
    let pie_ms = (groups * (c32 + CALL_CYCLES + GROUP_SCALAR_CYCLES)) as f64 / CLOCK_HZ * 1e3;
    // Portable kernel: assume 4 cycles per value (two byte loads with sign extension, multiply,
    // add) plus the same per-group work; an estimate, not an interpreter count.
    let portable_ms =
        (groups * (group * 4 + CALL_CYCLES + GROUP_SCALAR_CYCLES)) as f64 / CLOCK_HZ * 1e3;
    let pass = |compute: f64| stream_ms.max(compute);
    let total = SELF_TEST_DUAL_RUNS as f64 * pass(pie_ms / 2.0) + pass(pie_ms) + pass(portable_ms);
    println!(
        "boot self-test (badge-6m w1 {rows}x{cols}): {SELF_TEST_DUAL_RUNS} dual + 1 single + 1 portable pass; per pass {stream_ms:.1} ms streaming, {pie_ms:.1} ms PIE compute on one core, {portable_ms:.1} ms portable; about {total:.0} ms in all",
    );
    assert!(total < 250.0, "the self-test would take {total} ms");
}
