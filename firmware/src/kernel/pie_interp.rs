//! A host interpreter for exactly the Xtensa + PIE instructions that [`PIE_DOT_ASM`] uses.
//!
//! No machine here executes PIE, so the kernel is proven by running its template text: the
//! `{…}` operand placeholders are replaced by fixed address registers ([`DOT_BINDINGS`], the
//! interpreter's stand-in for the compiler's register allocation), the text is parsed into
//! [`Insn`]s, and a [`Machine`] executes them on a byte-array memory. Anything the parser does
//! not know is an error, never a silent skip.
//!
//! # Supported instructions
//!
//! `ee.zero.accx`, `ee.zero.q`, `ee.vld.128.ip`, `ee.vmulas.s8.accx`,
//! `ee.vmulas.s8.accx.ld.ip`, `rur.accx_0`, `rur.accx_1`, `wur.accx_0`, `wur.accx_1`,
//! `loopnez`, `loopgtz`, `nop`, `mov`, `movi`, `srli`, `extui`, `addi`, and numeric local labels (`1:`, referenced as `1f` / `1b`), one
//! statement per line or separated by `;`, `#` starting a comment. Semantics follow the ESP32-S3
//! TRM as summarised in `shared/reference/esp32s3-pie.md`:
//!
//! * ACCX is 40 bits, held sign-extended; every MAC adds the sum of its 16 products and
//!   saturates to [-2^39, 2^39 - 1];
//! * 128-bit loads read from `addr & !15` (the low four bits are ignored silently), then the
//!   address register is post-incremented by the immediate;
//! * the fused `ee.vmulas.s8.accx.ld.ip qu, as, imm, qx, qy` multiplies the OLD `qx`, `qy`
//!   before loading `qu`;
//! * `loopnez`/`loopgtz as, L` set LCOUNT = as - 1, LBEG = next instruction, LEND = L, and jump
//!   to L when `as` is 0 (`loopgtz`: `as ≤ 0`, signed); an instruction that falls through into
//!   LEND while LCOUNT ≠ 0 decrements LCOUNT and continues at LBEG. A loop instruction inside an
//!   active loop body is an error (loops do not nest), as is a body outside 1..=256 bytes;
//! * `rur.accx_1` returns bits 39..32 zero-extended; `wur.accx_1` writes bits 39..32 from the
//!   low 8 bits of its register.
//!
//! # Load-use hazards ([`Machine::hazards`])
//!
//! The manual's semantics above are what one core sees when nothing else is going on. A
//! public ESP32-S3 project that ran int8 PIE dot products on both cores of real hardware
//! found two patterns that gave run-to-run differences under dual-core contention, and
//! Espressif's esp-dl documentation gives a two-cycle latency from a q-register load to its
//! use. The interpreter therefore enforces two rules (see [`Hazards`]):
//!
//! * **load-use window**: a q register written by a load (`ee.vld.128.ip`, or the load half of
//!   `ee.vmulas.s8.accx.ld.ip`) is unavailable to the next [`Hazards::window`] executed
//!   instructions (default [`LOAD_USE_WINDOW`] = 4). The window is counted along the path
//!   actually executed, so a load at the end of a zero-overhead loop body and a read at its
//!   start meet on the wrap-around, and only when the loop really iterates again;
//! * **fused load into a MAC source**: `ee.vmulas.s8.accx.ld.ip qu, …, qx, qy` with `qu` equal
//!   to `qx` or `qy` (the MAC may see the new value when the load completes early).
//!
//! In [`HazardMode::Reject`] (the default) a violation stops the run with an error naming the
//! instruction, its line and the register. In [`HazardMode::Garbage`] the run goes on the way
//! the failing hardware did: a register read inside its window yields pseudo-random bytes
//! (the load has not landed), and a fused MAC whose own load targets one of its sources
//! multiplies the newly loaded value, so value tests fail as they would on a badge.
//! [`HazardMode::Ideal`] keeps the manual's semantics (for tests of the semantics alone).
//!
//! # Cycle model ([`Stats::cycles`])
//!
//! One cycle per executed instruction, including `loopnez`/`loopgtz` and each `nop`; the
//! zero-overhead loop's back-edge costs nothing; 128-bit loads hit internal SRAM in one cycle
//! with no bank conflict. A kernel that is clean under the hazard rules never waits for a load,
//! so the load latency adds no cycles. ACCX needs two instructions between a MAC and
//! `rur.accx_*`: with [`Machine::strict_accx_latency`] (the default) reading earlier is an
//! error; otherwise the missing distance is added as stall cycles. Call overhead around the
//! `asm!` block is not part of the template and not counted.
//!
//! [`PIE_DOT_ASM`]: super::pie::PIE_DOT_ASM

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::pie::PIE_DOT_ASM;

/// Register binding used to run [`PIE_DOT_ASM`]: placeholder → address register. The real
/// compiler picks its own registers; any distinct choice is equivalent, this one mimics the
/// windowed ABI's first argument registers.
pub const DOT_BINDINGS: [(&str, &str); 6] = [
    ("a", "a2"),
    ("b", "a3"),
    ("n", "a4"),
    ("cnt", "a5"),
    ("odd", "a7"),
    ("out", "a6"),
];

/// Lower saturation bound of ACCX (-2^39).
pub const ACCX_MIN: i64 = -(1 << 39);
/// Upper saturation bound of ACCX (2^39 - 1).
pub const ACCX_MAX: i64 = (1 << 39) - 1;

/// Instructions ACCX needs between a MAC and `rur.accx_*`.
pub const ACCX_READ_DISTANCE: u64 = 2;

/// Why the interpreter refused or stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    /// A `{name}` placeholder had no binding, or a brace was unbalanced.
    Template(String),
    /// A line could not be parsed (bad operand, immediate out of range, unknown label).
    Parse {
        /// 1-based source line.
        line: usize,
        /// What was wrong.
        msg: String,
    },
    /// A mnemonic the interpreter does not implement.
    UnknownInstruction {
        /// 1-based source line.
        line: usize,
        /// The mnemonic.
        mnemonic: String,
    },
    /// A load outside the memory array.
    MemoryOutOfRange {
        /// The (aligned) address.
        addr: u32,
    },
    /// `rur.accx_*` read ACCX too soon after a MAC.
    AccxLatency {
        /// 1-based source line of the `rur`.
        line: usize,
        /// Instructions between the MAC and the read.
        distance: u64,
    },
    /// A loop instruction executed inside an active loop body.
    NestedLoop {
        /// 1-based source line.
        line: usize,
    },
    /// More instructions executed than the step limit allows.
    StepLimit(u64),
    /// A q register was read inside the load-use window of the load that wrote it.
    LoadUse {
        /// 1-based source line of the reading instruction.
        line: usize,
        /// The reading instruction's text.
        insn: String,
        /// The register read (`q0`..`q7` as 0..7).
        reg: u8,
        /// 1-based source line of the load.
        load_line: usize,
        /// Executed instructions from the load to the read (1 = the very next one).
        distance: u64,
        /// The window in force.
        window: u64,
    },
    /// A fused MAC+load whose load target is one of its own MAC sources.
    FusedLoadIntoSource {
        /// 1-based source line.
        line: usize,
        /// The instruction's text.
        insn: String,
        /// The register both loaded and multiplied.
        reg: u8,
    },
}

impl core::fmt::Display for InterpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            InterpError::LoadUse {
                line,
                insn,
                reg,
                load_line,
                distance,
                window,
            } => write!(
                f,
                "line {line}: `{insn}` reads q{reg} {distance} instruction(s) after the load on \
                 line {load_line}; a loaded q register is unavailable for {window}"
            ),
            InterpError::FusedLoadIntoSource { line, insn, reg } => write!(
                f,
                "line {line}: `{insn}` loads q{reg}, one of its own MAC sources"
            ),
            _ => write!(f, "{self:?}"),
        }
    }
}

/// Instructions after a q-register load during which the register must not be read (the
/// distance that held on real dual-core hardware; see the module documentation).
pub const LOAD_USE_WINDOW: u64 = 4;

/// What the interpreter does about a hazard (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HazardMode {
    /// Stop with [`InterpError::LoadUse`] or [`InterpError::FusedLoadIntoSource`].
    Reject,
    /// Go on with the values the failing hardware produced (garbage, or the new load).
    Garbage,
    /// The manual's ideal semantics: no hazards at all.
    Ideal,
}

/// The hazard rules in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hazards {
    /// Instructions after a load during which its register is unavailable.
    pub window: u64,
    /// What a violation does.
    pub mode: HazardMode,
}

impl Default for Hazards {
    fn default() -> Self {
        Hazards {
            window: LOAD_USE_WINDOW,
            mode: HazardMode::Reject,
        }
    }
}

/// Loop instruction flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    /// `loopnez`: skip when the count is 0.
    Nez,
    /// `loopgtz`: skip when the count is ≤ 0 (signed).
    Gtz,
}

/// One parsed instruction. Register fields are register numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `ee.zero.accx`
    ZeroAccx,
    /// `ee.zero.q qa`: qa = 0 (an ALU write, not a load: no load-use window).
    ZeroQ {
        /// Register cleared.
        qa: u8,
    },
    /// `ee.vld.128.ip qu, as, imm`
    Vld128Ip {
        /// Destination q register.
        qu: u8,
        /// Address register.
        asr: u8,
        /// Post-increment.
        imm: i32,
    },
    /// `ee.vmulas.s8.accx qx, qy`
    VmulasS8Accx {
        /// First multiplicand.
        qx: u8,
        /// Second multiplicand.
        qy: u8,
    },
    /// `ee.vmulas.s8.accx.ld.ip qu, as, imm, qx, qy`
    VmulasS8AccxLdIp {
        /// Destination q register of the load.
        qu: u8,
        /// Address register.
        asr: u8,
        /// Post-increment.
        imm: i32,
        /// First multiplicand.
        qx: u8,
        /// Second multiplicand.
        qy: u8,
    },
    /// `rur.accx_0 ar` (`hi = false`) or `rur.accx_1 ar` (`hi = true`).
    RurAccx {
        /// Destination register.
        ar: u8,
        /// Bits 39..32 instead of 31..0.
        hi: bool,
    },
    /// `wur.accx_0 ar` / `wur.accx_1 ar`.
    WurAccx {
        /// Source register.
        ar: u8,
        /// Bits 39..32 instead of 31..0.
        hi: bool,
    },
    /// `nop`
    Nop,
    /// `mov ar, as`
    Mov {
        /// Destination.
        ar: u8,
        /// Source.
        asr: u8,
    },
    /// `movi ar, imm`
    Movi {
        /// Destination.
        ar: u8,
        /// Immediate (-2048..=2047).
        imm: i32,
    },
    /// `srli ar, at, sa`
    Srli {
        /// Destination.
        ar: u8,
        /// Source.
        at: u8,
        /// Shift (0..=15).
        sa: u32,
    },
    /// `extui ar, at, shift, bits`: ar = (at >> shift) & (2^bits - 1).
    Extui {
        /// Destination.
        ar: u8,
        /// Source.
        at: u8,
        /// Shift (0..=31).
        shift: u32,
        /// Field width (1..=16).
        bits: u32,
    },
    /// `addi at, as, imm`
    Addi {
        /// Destination.
        at: u8,
        /// Source.
        asr: u8,
        /// Immediate (-128..=127).
        imm: i32,
    },
    /// `loopnez as, L` / `loopgtz as, L`
    Loop {
        /// Skip condition.
        kind: LoopKind,
        /// Count register.
        asr: u8,
        /// Index of the instruction at the end label.
        end: usize,
    },
}

impl Insn {
    /// Encoded size in bytes (24-bit formats except the 32-bit fused load), used for the
    /// 256-byte loop-body limit.
    pub fn size(&self) -> usize {
        match self {
            Insn::VmulasS8AccxLdIp { .. } => 4,
            _ => 3,
        }
    }
}

/// A parsed program: instructions with their 1-based source lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The instructions in order.
    pub insns: Vec<Insn>,
    /// `lines[i]` is the source line of `insns[i]`.
    pub lines: Vec<usize>,
    /// `text[i]` is the source text of `insns[i]` (for error messages).
    pub text: Vec<String>,
}

/// Replaces each `{name}` in `template` by its binding (`{{`/`}}` are literal braces, as in
/// `asm!`). An unbound name is an error.
pub fn bind(template: &str, bindings: &[(&str, &str)]) -> Result<String, InterpError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(stripped) = tail.strip_prefix('{') {
            let close = stripped
                .find('}')
                .ok_or_else(|| InterpError::Template("unclosed '{'".into()))?;
            let name = &stripped[..close];
            let reg = bindings
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| InterpError::Template(format!("unbound placeholder {{{name}}}")))?;
            out.push_str(reg);
            rest = &stripped[close + 1..];
        } else {
            return Err(InterpError::Template("unmatched '}'".into()));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn perr(line: usize, msg: impl Into<String>) -> InterpError {
    InterpError::Parse {
        line,
        msg: msg.into(),
    }
}

fn parse_reg(tok: &str, prefix: char, count: u8, line: usize) -> Result<u8, InterpError> {
    let num = tok
        .strip_prefix(prefix)
        .and_then(|d| d.parse::<u8>().ok())
        .filter(|&r| r < count && !tok[1..].starts_with('+'))
        .ok_or_else(|| {
            perr(
                line,
                format!("expected {prefix}0..{prefix}{}, got {tok:?}", count - 1),
            )
        })?;
    Ok(num)
}

fn parse_imm(tok: &str, lo: i32, hi: i32, step: i32, line: usize) -> Result<i32, InterpError> {
    let (neg, digits) = match tok.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, tok),
    };
    let mag = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16)
    } else {
        digits.parse::<i64>()
    }
    .map_err(|_| perr(line, format!("bad immediate {tok:?}")))?;
    let v = if neg { -mag } else { mag };
    if v < i64::from(lo) || v > i64::from(hi) || v % i64::from(step) != 0 {
        return Err(perr(
            line,
            format!("immediate {v} outside {lo}..={hi} (step {step})"),
        ));
    }
    Ok(v as i32)
}

/// A label reference waiting for resolution: (instruction index, label number, forward?, line).
type Fixup = (usize, u32, bool, usize);

/// Parses bound assembly text (no placeholders left) into a [`Program`].
pub fn parse(text: &str) -> Result<Program, InterpError> {
    let mut insns = Vec::new();
    let mut lines = Vec::new();
    let mut text_of = Vec::new();
    // Label definitions in source order: (number, index of the next instruction, line).
    let mut labels: Vec<(u32, usize, usize)> = Vec::new();
    let mut fixups: Vec<Fixup> = Vec::new();
    for (lineno0, raw_line) in text.lines().enumerate() {
        let line = lineno0 + 1;
        let code = raw_line.split('#').next().unwrap_or("");
        for stmt in code.split(';') {
            let mut stmt = stmt.trim();
            // Leading numeric labels, possibly several, possibly followed by an instruction.
            while let Some(colon) = stmt.find(':') {
                let name = stmt[..colon].trim();
                if name.is_empty() || !name.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(perr(line, format!("only numeric local labels: {name:?}")));
                }
                let num = name
                    .parse::<u32>()
                    .map_err(|_| perr(line, "label number too large"))?;
                labels.push((num, insns.len(), line));
                stmt = stmt[colon + 1..].trim();
            }
            if stmt.is_empty() {
                continue;
            }
            let (mnemonic, args) = match stmt.find(char::is_whitespace) {
                Some(i) => (&stmt[..i], stmt[i..].trim()),
                None => (stmt, ""),
            };
            let mnemonic_lc = mnemonic.to_ascii_lowercase();
            let ops: Vec<&str> = if args.is_empty() {
                Vec::new()
            } else {
                args.split(',').map(str::trim).collect()
            };
            let want = |k: usize| -> Result<(), InterpError> {
                if ops.len() == k {
                    Ok(())
                } else {
                    Err(perr(
                        line,
                        format!("{mnemonic} takes {k} operands, got {}", ops.len()),
                    ))
                }
            };
            let ar = |i: usize| parse_reg(ops[i], 'a', 16, line);
            let qr = |i: usize| parse_reg(ops[i], 'q', 8, line);
            let insn = match mnemonic_lc.as_str() {
                "ee.zero.accx" => {
                    want(0)?;
                    Insn::ZeroAccx
                }
                "ee.zero.q" => {
                    want(1)?;
                    Insn::ZeroQ { qa: qr(0)? }
                }
                "ee.vld.128.ip" => {
                    want(3)?;
                    Insn::Vld128Ip {
                        qu: qr(0)?,
                        asr: ar(1)?,
                        imm: parse_imm(ops[2], -2048, 2032, 16, line)?,
                    }
                }
                "ee.vmulas.s8.accx" => {
                    want(2)?;
                    Insn::VmulasS8Accx {
                        qx: qr(0)?,
                        qy: qr(1)?,
                    }
                }
                "ee.vmulas.s8.accx.ld.ip" => {
                    want(5)?;
                    Insn::VmulasS8AccxLdIp {
                        qu: qr(0)?,
                        asr: ar(1)?,
                        imm: parse_imm(ops[2], -512, 496, 16, line)?,
                        qx: qr(3)?,
                        qy: qr(4)?,
                    }
                }
                "rur.accx_0" | "rur.accx_1" => {
                    want(1)?;
                    Insn::RurAccx {
                        ar: ar(0)?,
                        hi: mnemonic_lc.ends_with('1'),
                    }
                }
                "wur.accx_0" | "wur.accx_1" => {
                    want(1)?;
                    Insn::WurAccx {
                        ar: ar(0)?,
                        hi: mnemonic_lc.ends_with('1'),
                    }
                }
                "nop" => {
                    want(0)?;
                    Insn::Nop
                }
                "mov" => {
                    want(2)?;
                    Insn::Mov {
                        ar: ar(0)?,
                        asr: ar(1)?,
                    }
                }
                "movi" => {
                    want(2)?;
                    Insn::Movi {
                        ar: ar(0)?,
                        imm: parse_imm(ops[1], -2048, 2047, 1, line)?,
                    }
                }
                "srli" => {
                    want(3)?;
                    Insn::Srli {
                        ar: ar(0)?,
                        at: ar(1)?,
                        sa: parse_imm(ops[2], 0, 15, 1, line)? as u32,
                    }
                }
                "extui" => {
                    want(4)?;
                    Insn::Extui {
                        ar: ar(0)?,
                        at: ar(1)?,
                        shift: parse_imm(ops[2], 0, 31, 1, line)? as u32,
                        bits: parse_imm(ops[3], 1, 16, 1, line)? as u32,
                    }
                }
                "addi" => {
                    want(3)?;
                    Insn::Addi {
                        at: ar(0)?,
                        asr: ar(1)?,
                        imm: parse_imm(ops[2], -128, 127, 1, line)?,
                    }
                }
                "loopnez" | "loopgtz" => {
                    want(2)?;
                    let target = ops[1];
                    let (num, fwd) = match target.as_bytes().last() {
                        Some(b'f') => (&target[..target.len() - 1], true),
                        Some(b'b') => (&target[..target.len() - 1], false),
                        _ => return Err(perr(line, format!("label reference {target:?}"))),
                    };
                    let num = num
                        .parse::<u32>()
                        .map_err(|_| perr(line, format!("label reference {target:?}")))?;
                    fixups.push((insns.len(), num, fwd, line));
                    Insn::Loop {
                        kind: if mnemonic_lc == "loopnez" {
                            LoopKind::Nez
                        } else {
                            LoopKind::Gtz
                        },
                        asr: ar(0)?,
                        end: usize::MAX,
                    }
                }
                _ => {
                    return Err(InterpError::UnknownInstruction {
                        line,
                        mnemonic: mnemonic.into(),
                    })
                }
            };
            insns.push(insn);
            lines.push(line);
            text_of.push(String::from(stmt));
        }
    }
    for (at, num, fwd, line) in fixups {
        // `Nf`: the first definition after the reference; `Nb`: the last one before it.
        let def = if fwd {
            labels.iter().find(|&&(n, idx, _)| n == num && idx > at)
        } else {
            labels
                .iter()
                .rev()
                .find(|&&(n, idx, _)| n == num && idx <= at)
        };
        let end = def.map(|&(_, idx, _)| idx).ok_or_else(|| {
            perr(
                line,
                format!("undefined label {num}{}", if fwd { 'f' } else { 'b' }),
            )
        })?;
        if end <= at + 1 {
            return Err(perr(line, "loop end must follow a non-empty body"));
        }
        let body_bytes: usize = insns[at + 1..end].iter().map(Insn::size).sum();
        if body_bytes > 256 {
            return Err(perr(
                line,
                format!("loop body of {body_bytes} bytes exceeds 256"),
            ));
        }
        if let Insn::Loop { end: e, .. } = &mut insns[at] {
            *e = end;
        }
    }
    Ok(Program {
        insns,
        lines,
        text: text_of,
    })
}

/// Execution counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Instructions executed (loop bodies counted per iteration).
    pub instructions: u64,
    /// Cycle estimate under the model in the module documentation.
    pub cycles: u64,
    /// 128-bit loads (plain and fused).
    pub loads: u64,
    /// `ee.vmulas.s8.accx` MACs (plain and fused).
    pub macs: u64,
    /// Hazards met and let through ([`HazardMode::Garbage`] only).
    pub hazards: u64,
}

impl Stats {
    fn since(&self, before: &Stats) -> Stats {
        Stats {
            instructions: self.instructions - before.instructions,
            cycles: self.cycles - before.cycles,
            loads: self.loads - before.loads,
            macs: self.macs - before.macs,
            hazards: self.hazards - before.hazards,
        }
    }
}

/// Architectural state plus memory.
#[derive(Clone, Debug)]
pub struct Machine {
    /// Address registers a0..a15.
    pub a: [u32; 16],
    /// Vector registers q0..q7, 16 bytes each (byte 0 = lowest address).
    pub q: [[u8; 16]; 8],
    accx: i64,
    /// Memory: `mem[i]` is at address `mem_base + i`.
    pub mem: Vec<u8>,
    /// Address of `mem[0]` (a multiple of 16).
    pub mem_base: u32,
    /// LBEG as an instruction index.
    pub lbeg: usize,
    /// LEND as an instruction index.
    pub lend: usize,
    /// LCOUNT.
    pub lcount: u32,
    /// Error (rather than stall) when `rur.accx_*` follows a MAC too closely.
    pub strict_accx_latency: bool,
    /// The load-use hazard rules (see the module documentation).
    pub hazards: Hazards,
    /// Counters, cumulative over runs.
    pub stats: Stats,
    /// Instructions executed since the last MAC (None before any).
    since_mac: Option<u64>,
    /// The latest load into each q register: its executed-instruction index and its index in
    /// the program (`None`: last written by something other than a load).
    pending: [Option<(u64, usize)>; 8],
    /// State of the generator behind [`HazardMode::Garbage`]'s bytes.
    garbage: u64,
}

/// Base address of the default memory: the ESP32-S3 internal data SRAM.
pub const DEFAULT_MEM_BASE: u32 = 0x3FC8_8000;

impl Machine {
    /// A machine with `size` bytes of zeroed memory at [`DEFAULT_MEM_BASE`] and the default
    /// hazard rules.
    pub fn new(size: usize) -> Self {
        Machine {
            a: [0; 16],
            q: [[0; 16]; 8],
            accx: 0,
            mem: vec![0; size],
            mem_base: DEFAULT_MEM_BASE,
            lbeg: 0,
            lend: 0,
            lcount: 0,
            strict_accx_latency: true,
            hazards: Hazards::default(),
            stats: Stats::default(),
            since_mac: None,
            pending: [None; 8],
            garbage: 0x243F_6A88_85A3_08D3,
        }
    }

    /// ACCX as a sign-extended 40-bit value.
    pub fn accx(&self) -> i64 {
        self.accx
    }

    /// Sets ACCX (saturated to 40 bits).
    pub fn set_accx(&mut self, v: i64) {
        self.accx = v.clamp(ACCX_MIN, ACCX_MAX);
    }

    /// Copies `bytes` into memory at absolute address `addr`.
    pub fn write(&mut self, addr: u32, bytes: &[u8]) -> Result<(), InterpError> {
        let off = self.offset(addr, bytes.len())?;
        self.mem[off..off + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn offset(&self, addr: u32, len: usize) -> Result<usize, InterpError> {
        let off = addr
            .checked_sub(self.mem_base)
            .map(|o| o as usize)
            .filter(|&o| o + len <= self.mem.len())
            .ok_or(InterpError::MemoryOutOfRange { addr })?;
        Ok(off)
    }

    /// Loads 16 bytes into `qu` at executed-instruction index `now` (instruction `pc`).
    fn load128(
        &mut self,
        qu: u8,
        asr: u8,
        imm: i32,
        now: u64,
        pc: usize,
    ) -> Result<(), InterpError> {
        let addr = self.a[asr as usize] & !15;
        let off = self.offset(addr, 16)?;
        self.q[qu as usize].copy_from_slice(&self.mem[off..off + 16]);
        self.a[asr as usize] = self.a[asr as usize].wrapping_add(imm as u32);
        self.stats.loads += 1;
        self.pending[qu as usize] = Some((now, pc));
        Ok(())
    }

    /// The value of `reg` as instruction `pc` (executed as number `now`) reads it, under the
    /// hazard rules.
    fn read_q(
        &mut self,
        prog: &Program,
        reg: u8,
        now: u64,
        pc: usize,
    ) -> Result<[u8; 16], InterpError> {
        let value = self.q[reg as usize];
        let Some((at, load_pc)) = self.pending[reg as usize] else {
            return Ok(value);
        };
        let distance = now - at;
        if self.hazards.mode == HazardMode::Ideal || distance > self.hazards.window {
            return Ok(value);
        }
        match self.hazards.mode {
            HazardMode::Reject => Err(InterpError::LoadUse {
                line: prog.lines[pc],
                insn: prog.text[pc].clone(),
                reg,
                load_line: prog.lines[load_pc],
                distance,
                window: self.hazards.window,
            }),
            _ => {
                self.stats.hazards += 1;
                let mut out = [0u8; 16];
                for chunk in out.chunks_mut(8) {
                    // xorshift64*: the bytes the register held before the load landed.
                    self.garbage ^= self.garbage >> 12;
                    self.garbage ^= self.garbage << 25;
                    self.garbage ^= self.garbage >> 27;
                    let v = self
                        .garbage
                        .wrapping_mul(0x2545_F491_4F6C_DD1D)
                        .to_le_bytes();
                    chunk.copy_from_slice(&v);
                }
                Ok(out)
            }
        }
    }

    fn mac(&mut self, x: [u8; 16], y: [u8; 16]) {
        let sum: i64 = x
            .iter()
            .zip(&y)
            .map(|(&p, &r)| i64::from(p as i8) * i64::from(r as i8))
            .sum();
        self.accx = (self.accx + sum).clamp(ACCX_MIN, ACCX_MAX);
        self.stats.macs += 1;
        self.since_mac = Some(0);
    }

    /// The fused MAC+load at `pc`: the rule on a load into its own source, then the MAC, then
    /// the load.
    fn fused(
        &mut self,
        prog: &Program,
        (qu, asr, imm, qx, qy): (u8, u8, i32, u8, u8),
        now: u64,
        pc: usize,
    ) -> Result<(), InterpError> {
        let mut x = self.read_q(prog, qx, now, pc)?;
        let mut y = self.read_q(prog, qy, now, pc)?;
        let into_source = qu == qx || qu == qy;
        if into_source && self.hazards.mode != HazardMode::Ideal {
            if self.hazards.mode == HazardMode::Reject {
                return Err(InterpError::FusedLoadIntoSource {
                    line: prog.lines[pc],
                    insn: prog.text[pc].clone(),
                    reg: qu,
                });
            }
            // What the failing hardware did: the load landed before the MAC read its source.
            self.stats.hazards += 1;
            let addr = self.a[asr as usize] & !15;
            let off = self.offset(addr, 16)?;
            let mut new = [0u8; 16];
            new.copy_from_slice(&self.mem[off..off + 16]);
            if qu == qx {
                x = new;
            }
            if qu == qy {
                y = new;
            }
        }
        self.mac(x, y);
        self.load128(qu, asr, imm, now, pc)
    }

    /// Runs `prog` from its first instruction until it falls off the end, executing at most
    /// `max_steps` instructions. Returns the counters of this run alone.
    pub fn run(&mut self, prog: &Program, max_steps: u64) -> Result<Stats, InterpError> {
        let before = self.stats;
        let mut pc = 0usize;
        let mut steps = 0u64;
        while pc < prog.insns.len() {
            if steps == max_steps {
                return Err(InterpError::StepLimit(max_steps));
            }
            steps += 1;
            // Executed-instruction index: the clock of the load-use windows.
            let now = self.stats.instructions;
            let line = prog.lines[pc];
            let mut next = pc + 1;
            let mut sequential = true;
            let mut cycles = 1u64;
            let mut is_mac = false;
            match prog.insns[pc] {
                Insn::ZeroAccx => self.accx = 0,
                Insn::ZeroQ { qa } => {
                    self.q[qa as usize] = [0; 16];
                    self.pending[qa as usize] = None;
                }
                Insn::Vld128Ip { qu, asr, imm } => self.load128(qu, asr, imm, now, pc)?,
                Insn::VmulasS8Accx { qx, qy } => {
                    let x = self.read_q(prog, qx, now, pc)?;
                    let y = self.read_q(prog, qy, now, pc)?;
                    self.mac(x, y);
                    is_mac = true;
                }
                Insn::VmulasS8AccxLdIp {
                    qu,
                    asr,
                    imm,
                    qx,
                    qy,
                } => {
                    self.fused(prog, (qu, asr, imm, qx, qy), now, pc)?;
                    is_mac = true;
                }
                Insn::RurAccx { ar, hi } => {
                    if let Some(d) = self.since_mac {
                        if d < ACCX_READ_DISTANCE {
                            if self.strict_accx_latency {
                                return Err(InterpError::AccxLatency { line, distance: d });
                            }
                            cycles += ACCX_READ_DISTANCE - d;
                        }
                    }
                    let bits = self.accx as u64;
                    self.a[ar as usize] = if hi {
                        ((bits >> 32) & 0xFF) as u32
                    } else {
                        bits as u32
                    };
                }
                Insn::WurAccx { ar, hi } => {
                    let v = self.a[ar as usize];
                    let bits = self.accx as u64 & ((1 << 40) - 1);
                    let bits = if hi {
                        (bits & 0xFFFF_FFFF) | (u64::from(v & 0xFF) << 32)
                    } else {
                        (bits & !0xFFFF_FFFF) | u64::from(v)
                    };
                    // Sign-extend bit 39.
                    self.accx = ((bits << 24) as i64) >> 24;
                }
                Insn::Nop => {}
                Insn::Mov { ar, asr } => self.a[ar as usize] = self.a[asr as usize],
                Insn::Movi { ar, imm } => self.a[ar as usize] = imm as u32,
                Insn::Srli { ar, at, sa } => self.a[ar as usize] = self.a[at as usize] >> sa,
                Insn::Extui {
                    ar,
                    at,
                    shift,
                    bits,
                } => self.a[ar as usize] = (self.a[at as usize] >> shift) & ((1u32 << bits) - 1),
                Insn::Addi { at, asr, imm } => {
                    self.a[at as usize] = self.a[asr as usize].wrapping_add(imm as u32)
                }
                Insn::Loop { kind, asr, end } => {
                    if self.lcount != 0 && pc >= self.lbeg && pc < self.lend {
                        return Err(InterpError::NestedLoop { line });
                    }
                    let count = self.a[asr as usize];
                    self.lcount = count.wrapping_sub(1);
                    self.lbeg = pc + 1;
                    self.lend = end;
                    let skip = match kind {
                        LoopKind::Nez => count == 0,
                        LoopKind::Gtz => (count as i32) <= 0,
                    };
                    if skip {
                        next = end;
                        sequential = false;
                    }
                }
            }
            if !is_mac {
                if let Some(d) = self.since_mac.as_mut() {
                    *d += 1;
                }
            }
            if sequential && next == self.lend && self.lcount != 0 {
                self.lcount -= 1;
                next = self.lbeg;
            }
            self.stats.instructions += 1;
            self.stats.cycles += cycles;
            pc = next;
        }
        Ok(self.stats.since(&before))
    }
}

/// [`PIE_DOT_ASM`] with the [`DOT_BINDINGS`] registers, parsed.
pub fn dot_program() -> Result<Program, InterpError> {
    parse(&bind(PIE_DOT_ASM, &DOT_BINDINGS)?)
}

fn binding(name: &str) -> usize {
    let reg = DOT_BINDINGS
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| *v)
        .unwrap_or("a0");
    reg[1..].parse().unwrap_or(0)
}

/// Result of one interpreted group dot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotRun {
    /// The `{out}` register as the kernel returns it.
    pub value: i32,
    /// ACCX after the run, all 40 bits.
    pub accx: i64,
    /// `{a}` after the run.
    pub a_end: u32,
    /// `{b}` after the run.
    pub b_end: u32,
    /// Counters of this run.
    pub stats: Stats,
}

/// Runs [`PIE_DOT_ASM`] on `machine` as `dot_i8_pie(a_addr, b_addr, n)` would: the operands
/// must already be in memory. Nothing is checked beyond what the hardware would do.
pub fn run_dot(
    machine: &mut Machine,
    prog: &Program,
    a_addr: u32,
    b_addr: u32,
    n: u32,
) -> Result<DotRun, InterpError> {
    let (ra, rb, rn, ro) = (binding("a"), binding("b"), binding("n"), binding("out"));
    machine.a[ra] = a_addr;
    machine.a[rb] = b_addr;
    machine.a[rn] = n;
    // Hardware loop steps are bounded by n/16 + a constant; allow generous slack.
    let stats = machine.run(prog, u64::from(n) + 64)?;
    Ok(DotRun {
        value: machine.a[ro] as i32,
        accx: machine.accx(),
        a_end: machine.a[ra],
        b_end: machine.a[rb],
        stats,
    })
}

/// Byte that fills memory around the operands, so that a misaligned read picks up visible
/// garbage rather than zeros.
pub const FILL: u8 = 0x5A;

/// Lays `a` out at 16-aligned offset plus `misalign_a` and `b` likewise in a fresh machine
/// (memory elsewhere filled with [`FILL`]) and runs the kernel on them under the default
/// hazard rules.
pub fn simulate_dot(
    a: &[i8],
    b: &[i8],
    misalign_a: u32,
    misalign_b: u32,
) -> Result<DotRun, InterpError> {
    simulate_dot_with(Hazards::default(), a, b, misalign_a, misalign_b)
}

/// [`simulate_dot`] under the given hazard rules.
pub fn simulate_dot_with(
    hazards: Hazards,
    a: &[i8],
    b: &[i8],
    misalign_a: u32,
    misalign_b: u32,
) -> Result<DotRun, InterpError> {
    simulate_program(&dot_program()?, hazards, a, b, misalign_a, misalign_b)
}

/// [`simulate_dot_with`] for any parsed dot-product template with [`DOT_BINDINGS`] (used to
/// show what the hazard rules make of other kernels).
pub fn simulate_program(
    prog: &Program,
    hazards: Hazards,
    a: &[i8],
    b: &[i8],
    misalign_a: u32,
    misalign_b: u32,
) -> Result<DotRun, InterpError> {
    let n = a.len().max(b.len());
    let region = (n + 64).next_multiple_of(16);
    let mut m = Machine::new(2 * region + 64);
    m.hazards = hazards;
    m.mem.fill(FILL);
    let a_addr = m.mem_base + 32 + misalign_a;
    let b_addr = m.mem_base + 32 + region as u32 + misalign_b;
    let bytes = |s: &[i8]| s.iter().map(|&v| v as u8).collect::<Vec<u8>>();
    m.write(a_addr, &bytes(a))?;
    m.write(b_addr, &bytes(b))?;
    run_dot(&mut m, prog, a_addr, b_addr, n as u32)
}
