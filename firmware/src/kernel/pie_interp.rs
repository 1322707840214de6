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
//! `ee.zero.accx`, `ee.vld.128.ip`, `ee.vmulas.s8.accx`, `ee.vmulas.s8.accx.ld.ip`,
//! `rur.accx_0`, `rur.accx_1`, `wur.accx_0`, `wur.accx_1`, `loopnez`, `loopgtz`, `nop`, `mov`,
//! `movi`, `srli`, `addi`, and numeric local labels (`1:`, referenced as `1f` / `1b`), one
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
//! # Cycle model ([`Stats::cycles`])
//!
//! One cycle per executed instruction, including `loopnez`/`loopgtz` and each `nop`; the
//! zero-overhead loop's back-edge costs nothing; 128-bit loads hit internal SRAM in one cycle
//! with no bank conflict; q-register load-to-use latency is not modelled (none is documented for
//! this sequence; Espressif's kernels use the same back-to-back shape). ACCX needs two
//! instructions between a MAC and `rur.accx_*`: with [`Machine::strict_accx_latency`] (the
//! default) reading earlier is an error; otherwise the missing distance is added as stall cycles.
//! Call overhead around the `asm!` block is not part of the template and not counted.
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
pub const DOT_BINDINGS: [(&str, &str); 5] = [
    ("a", "a2"),
    ("b", "a3"),
    ("n", "a4"),
    ("cnt", "a5"),
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
}

impl core::fmt::Display for InterpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?}")
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
    Ok(Program { insns, lines })
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
    /// Counters, cumulative over runs.
    pub stats: Stats,
    /// Instructions executed since the last MAC (None before any).
    since_mac: Option<u64>,
}

/// Base address of the default memory: the ESP32-S3 internal data SRAM.
pub const DEFAULT_MEM_BASE: u32 = 0x3FC8_8000;

impl Machine {
    /// A machine with `size` bytes of zeroed memory at [`DEFAULT_MEM_BASE`].
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
            stats: Stats::default(),
            since_mac: None,
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

    fn load128(&mut self, qu: u8, asr: u8, imm: i32) -> Result<(), InterpError> {
        let addr = self.a[asr as usize] & !15;
        let off = self.offset(addr, 16)?;
        self.q[qu as usize].copy_from_slice(&self.mem[off..off + 16]);
        self.a[asr as usize] = self.a[asr as usize].wrapping_add(imm as u32);
        self.stats.loads += 1;
        Ok(())
    }

    fn mac(&mut self, qx: u8, qy: u8) {
        let (x, y) = (self.q[qx as usize], self.q[qy as usize]);
        let sum: i64 = x
            .iter()
            .zip(&y)
            .map(|(&p, &r)| i64::from(p as i8) * i64::from(r as i8))
            .sum();
        self.accx = (self.accx + sum).clamp(ACCX_MIN, ACCX_MAX);
        self.stats.macs += 1;
        self.since_mac = Some(0);
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
            let line = prog.lines[pc];
            let mut next = pc + 1;
            let mut sequential = true;
            let mut cycles = 1u64;
            let mut is_mac = false;
            match prog.insns[pc] {
                Insn::ZeroAccx => self.accx = 0,
                Insn::Vld128Ip { qu, asr, imm } => self.load128(qu, asr, imm)?,
                Insn::VmulasS8Accx { qx, qy } => {
                    self.mac(qx, qy);
                    is_mac = true;
                }
                Insn::VmulasS8AccxLdIp {
                    qu,
                    asr,
                    imm,
                    qx,
                    qy,
                } => {
                    self.mac(qx, qy);
                    is_mac = true;
                    self.load128(qu, asr, imm)?;
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
        Ok(Stats {
            instructions: self.stats.instructions - before.instructions,
            cycles: self.stats.cycles - before.cycles,
            loads: self.stats.loads - before.loads,
            macs: self.stats.macs - before.macs,
        })
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
/// (memory elsewhere filled with [`FILL`]) and runs the kernel on them.
pub fn simulate_dot(
    a: &[i8],
    b: &[i8],
    misalign_a: u32,
    misalign_b: u32,
) -> Result<DotRun, InterpError> {
    let n = a.len().max(b.len());
    let region = (n + 64).next_multiple_of(16);
    let mut m = Machine::new(2 * region + 64);
    m.mem.fill(FILL);
    let a_addr = m.mem_base + 32 + misalign_a;
    let b_addr = m.mem_base + 32 + region as u32 + misalign_b;
    let bytes = |s: &[i8]| s.iter().map(|&v| v as u8).collect::<Vec<u8>>();
    m.write(a_addr, &bytes(a))?;
    m.write(b_addr, &bytes(b))?;
    let prog = dot_program()?;
    run_dot(&mut m, &prog, a_addr, b_addr, n as u32)
}
