//! A stand-in for the ESP32-S3's serial ROM loader (and for espflash's RAM stub once that is
//! "uploaded") on a pseudo-terminal, so `badge flash` can run through real espflash code
//! without a badge.
//!
//! It speaks the SLIP-framed command protocol of Espressif's "Serial Protocol" document:
//! sync, register reads and writes (chip detection, eFuses, the SPI flash-ID command),
//! security info, SPI attach / set params, baud-rate change, RAM download (the stub upload,
//! answered with the stub's `OHAI` greeting), plain and deflated flash writes and flash MD5.
//! Writes land in an in-memory flash of the chip's size, which the test then saves as an
//! image file and boots in `badge sim`. Anything else is logged and answered with an error
//! status, as the ROM does for commands it does not know.

use flate2::write::ZlibDecoder;
use md5::{Digest, Md5};
use std::ffi::CStr;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Command opcodes (the second byte of a request).
pub mod op {
    pub const FLASH_BEGIN: u8 = 0x02;
    pub const FLASH_DATA: u8 = 0x03;
    pub const FLASH_END: u8 = 0x04;
    pub const MEM_BEGIN: u8 = 0x05;
    pub const MEM_END: u8 = 0x06;
    pub const MEM_DATA: u8 = 0x07;
    pub const SYNC: u8 = 0x08;
    pub const WRITE_REG: u8 = 0x09;
    pub const READ_REG: u8 = 0x0A;
    pub const SPI_SET_PARAMS: u8 = 0x0B;
    pub const SPI_ATTACH: u8 = 0x0D;
    pub const CHANGE_BAUDRATE: u8 = 0x0F;
    pub const FLASH_DEFL_BEGIN: u8 = 0x10;
    pub const FLASH_DEFL_DATA: u8 = 0x11;
    pub const FLASH_DEFL_END: u8 = 0x12;
    pub const SPI_FLASH_MD5: u8 = 0x13;
    pub const GET_SECURITY_INFO: u8 = 0x14;
}

/// The register read for chip detection and the ESP32-S3's value there.
const CHIP_DETECT_MAGIC_REG: u32 = 0x4000_1000;
const ESP32S3_MAGIC: u32 = 0x9;
/// The ESP32-S3's chip id in GET_SECURITY_INFO.
const ESP32S3_CHIP_ID: u32 = 9;
/// SPI1 (the flash controller): command register (bit 18 starts a user command), USER2
/// (command opcode in the low bits) and the first data word.
const SPI1_CMD: u32 = 0x6000_2000;
const SPI1_USR2: u32 = 0x6000_2020;
const SPI1_W0: u32 = 0x6000_2058;
const SPI_USR_BIT: u32 = 1 << 18;
/// JEDEC id of a 16 MB part (manufacturer, type, capacity 2^0x18).
const FLASH_JEDEC_ID: u32 = 0x18_40_EF;
const SECTOR: usize = 0x1000;

const SLIP_END: u8 = 0xC0;
const SLIP_ESC: u8 = 0xDB;

/// What the stand-in saw and stored.
#[derive(Debug, Default)]
pub struct StubLog {
    /// The flash as written (erased bytes are `FF`).
    pub flash: Vec<u8>,
    /// One past the highest byte written.
    pub written_end: usize,
    /// Every command's opcode, in order.
    pub commands: Vec<u8>,
    /// Opcodes it did not know (answered with an error).
    pub unknown: Vec<u8>,
    /// (offset, uncompressed length) of each flash write session.
    pub writes: Vec<(u32, u32)>,
    /// Whether the RAM stub was "uploaded" and started.
    pub stub_started: bool,
    /// Baud rates asked for.
    pub bauds: Vec<u32>,
    /// Protocol violations it noticed (bad sequence numbers, writes out of range).
    pub errors: Vec<String>,
}

impl StubLog {
    /// Writes the flash up to the last written byte, as a merged image is.
    pub fn save(&self, path: &Path) {
        std::fs::write(path, &self.flash[..self.written_end]).unwrap();
    }
    pub fn saw(&self, opcode: u8) -> bool {
        self.commands.contains(&opcode)
    }
}

/// A running stand-in: the device path to give espflash, and the thread serving it.
pub struct RomStub {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<StubLog>>,
}

impl RomStub {
    /// Opens a pseudo-terminal and serves the protocol on its master side.
    pub fn start(flash_size: usize) -> RomStub {
        Self::start_with(flash_size, false)
    }

    /// A chip that is not in download mode: it reads every command and answers none.
    pub fn start_mute() -> RomStub {
        Self::start_with(0, true)
    }

    fn start_with(flash_size: usize, mute: bool) -> RomStub {
        // SAFETY: plain libc calls on file descriptors this function owns; every result is
        // checked and ptsname_r writes at most buf.len() bytes.
        let (master, slave, path) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let master = OwnedFd::from_raw_fd(m);
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut buf = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, buf.as_mut_ptr(), buf.len()), 0);
            let path = PathBuf::from(CStr::from_ptr(buf.as_ptr()).to_str().unwrap());
            // Hold the slave open (in raw mode) until the flasher has connected, so the
            // line exists and nothing is echoed back in the meantime.
            let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            let s = libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            assert!(
                s >= 0,
                "open {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            let slave = OwnedFd::from_raw_fd(s);
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(s, &mut t), 0);
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
            (master, slave, path)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut dev = Device::new(flash_size);
            dev.mute = mute;
            serve(&master, Some(slave), &stop2, &mut dev);
            dev.log
        });
        RomStub {
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// The serial device to flash through.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving (once the flasher has hung up) and returns what was seen.
    pub fn finish(mut self) -> StubLog {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for RomStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads SLIP frames from the master side until the flasher hangs up (or `stop` is set while
/// the line is idle), answering each.
fn serve(master: &OwnedFd, mut slave: Option<OwnedFd>, stop: &AtomicBool, dev: &mut Device) {
    let fd = master.as_raw_fd();
    let mut frame = Vec::new();
    let mut in_frame = false;
    let mut escaped = false;
    let mut buf = [0u8; 4096];
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 20) };
        if r == 0 || pfd.revents & libc::POLLIN == 0 {
            // Idle, or nobody holds the slave side (POLLHUP).
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if pfd.revents & libc::POLLHUP != 0 {
                if slave.is_none() {
                    return; // the flasher connected, then hung up
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if slave.is_none() || stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // The flasher has the port open: let go of ours so its close is seen as a hang-up.
        slave = None;
        for &b in &buf[..n as usize] {
            match (in_frame, escaped, b) {
                (false, _, SLIP_END) => {
                    in_frame = true;
                    frame.clear();
                }
                (false, _, _) => {} // noise between frames
                (true, false, SLIP_END) => {
                    if frame.is_empty() {
                        continue; // back-to-back delimiters
                    }
                    let replies = dev.handle(&frame);
                    for reply in replies {
                        write_all(fd, &slip(&reply));
                    }
                    in_frame = false;
                }
                (true, false, SLIP_ESC) => escaped = true,
                (true, true, _) => {
                    frame.push(match b {
                        0xDC => SLIP_END,
                        0xDD => SLIP_ESC,
                        other => other,
                    });
                    escaped = false;
                }
                (true, false, _) => frame.push(b),
            }
        }
    }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

fn slip(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![SLIP_END];
    for &b in payload {
        match b {
            SLIP_END => out.extend([SLIP_ESC, 0xDC]),
            SLIP_ESC => out.extend([SLIP_ESC, 0xDD]),
            b => out.push(b),
        }
    }
    out.push(SLIP_END);
    out
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    d.get(i..i + 4)
        .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
}

/// An open flash write: where it goes, how big, and (for deflate) the inflater.
struct Write_ {
    offset: usize,
    size: usize,
    block_size: usize,
    next_seq: u32,
    written: usize,
    inflate: Option<ZlibDecoder<Vec<u8>>>,
}

/// The chip as the protocol sees it.
struct Device {
    regs: std::collections::HashMap<u32, u32>,
    stub: bool,
    ram_download: bool,
    write: Option<Write_>,
    mute: bool,
    log: StubLog,
}

/// Error codes of the ROM's status bytes.
const ERR_INVALID: u8 = 0x05;
const ERR_FAILED: u8 = 0x06;

impl Device {
    fn new(flash_size: usize) -> Device {
        Device {
            regs: Default::default(),
            stub: false,
            ram_download: false,
            write: None,
            mute: false,
            log: StubLog {
                flash: vec![0xFF; flash_size],
                ..Default::default()
            },
        }
    }

    /// A response: direction 1, the opcode, the size, a 32-bit value, the data, then the
    /// status bytes (4 from the ROM, 2 from the stub).
    fn reply(&self, opcode: u8, value: u32, data: &[u8], error: Option<u8>) -> Vec<u8> {
        let status: &[u8] = match (self.stub, error) {
            (false, None) => &[0, 0, 0, 0],
            (false, Some(_)) => &[1, 0, 0, 0],
            (true, None) => &[0, 0],
            (true, Some(_)) => &[1, 0],
        };
        let mut status = status.to_vec();
        if let Some(e) = error {
            status[1] = e;
        }
        let mut r = vec![1, opcode];
        r.extend(((data.len() + status.len()) as u16).to_le_bytes());
        r.extend(value.to_le_bytes());
        r.extend(data);
        r.extend(status);
        r
    }

    fn handle(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        if frame.len() < 8 || frame[0] != 0 {
            self.log
                .errors
                .push(format!("malformed request {frame:02x?}"));
            return vec![];
        }
        let opcode = frame[1];
        let len = u16::from_le_bytes([frame[2], frame[3]]) as usize;
        let data = &frame[8..];
        if data.len() != len {
            self.log.errors.push(format!(
                "opcode {opcode:#x}: length {len} but {} bytes",
                data.len()
            ));
        }
        self.log.commands.push(opcode);
        if self.mute {
            return vec![];
        }
        let ok = |dev: &Self, value| vec![dev.reply(opcode, value, &[], None)];
        let fail = |dev: &mut Self, code, why: String| {
            dev.log.errors.push(why);
            vec![dev.reply(opcode, 0, &[], Some(code))]
        };
        match opcode {
            // The ROM answers a sync frame eight times.
            op::SYNC => (0..8).map(|_| self.reply(opcode, 0, &[], None)).collect(),
            op::READ_REG => {
                let addr = u32_at(data, 0);
                let v = if addr == CHIP_DETECT_MAGIC_REG {
                    ESP32S3_MAGIC
                } else {
                    self.regs.get(&addr).copied().unwrap_or(0)
                };
                ok(self, v)
            }
            op::WRITE_REG => {
                for w in data.chunks_exact(16) {
                    let (addr, value, mask) = (u32_at(w, 0), u32_at(w, 4), u32_at(w, 8));
                    let old = self.regs.get(&addr).copied().unwrap_or(0);
                    let mut new = (old & !mask) | (value & mask);
                    if addr == SPI1_CMD && new & SPI_USR_BIT != 0 {
                        // Run the SPI user command: only RDID (0x9F) is asked for.
                        let cmd = self.regs.get(&SPI1_USR2).copied().unwrap_or(0) & 0xFFFF;
                        if cmd == 0x9F {
                            self.regs.insert(SPI1_W0, FLASH_JEDEC_ID);
                        }
                        new &= !SPI_USR_BIT;
                    }
                    self.regs.insert(addr, new);
                }
                ok(self, 0)
            }
            op::GET_SECURITY_INFO => {
                let mut info = vec![0u8; 12]; // flags, crypt count, key purposes: all clear
                info.extend(ESP32S3_CHIP_ID.to_le_bytes());
                info.extend(0u32.to_le_bytes()); // eco version
                vec![self.reply(opcode, 0, &info, None)]
            }
            op::SPI_ATTACH | op::SPI_SET_PARAMS => ok(self, 0),
            op::CHANGE_BAUDRATE => {
                self.log.bauds.push(u32_at(data, 0));
                ok(self, 0)
            }
            op::MEM_BEGIN => {
                self.ram_download = true;
                ok(self, 0)
            }
            op::MEM_DATA => {
                if !self.ram_download {
                    return fail(self, ERR_FAILED, "MEM_DATA without MEM_BEGIN".into());
                }
                ok(self, 0)
            }
            op::MEM_END => {
                self.ram_download = false;
                let entry = u32_at(data, 4);
                let mut out = ok(self, 0);
                if entry != 0 {
                    // The uploaded stub starts and greets; from now on it answers.
                    out.push(b"OHAI".to_vec());
                    self.stub = true;
                    self.log.stub_started = true;
                }
                out
            }
            op::FLASH_BEGIN | op::FLASH_DEFL_BEGIN => {
                let (size, blocks, block_size, offset) = (
                    u32_at(data, 0) as usize,
                    u32_at(data, 4),
                    u32_at(data, 8) as usize,
                    u32_at(data, 12) as usize,
                );
                let deflate = opcode == op::FLASH_DEFL_BEGIN;
                if offset + size > self.log.flash.len() || blocks == 0 && size > 0 {
                    return fail(
                        self,
                        ERR_FAILED,
                        format!("bad flash begin {offset:#x}+{size:#x}"),
                    );
                }
                // Erase the sectors the write covers, as the loader does.
                let end = (offset + size)
                    .next_multiple_of(SECTOR)
                    .min(self.log.flash.len());
                self.log.flash[offset..end].fill(0xFF);
                if size > 0 {
                    self.log.writes.push((offset as u32, size as u32));
                }
                self.write = Some(Write_ {
                    offset,
                    size,
                    block_size,
                    next_seq: 0,
                    written: 0,
                    inflate: deflate.then(|| ZlibDecoder::new(Vec::new())),
                });
                ok(self, 0)
            }
            op::FLASH_DATA | op::FLASH_DEFL_DATA => {
                let Some(mut w) = self.write.take() else {
                    return fail(self, ERR_FAILED, "flash data without begin".into());
                };
                let (n, seq) = (u32_at(data, 0) as usize, u32_at(data, 4));
                let payload = &data[16.min(data.len())..];
                if seq != w.next_seq || payload.len() != n {
                    self.write = Some(w);
                    return fail(
                        self,
                        ERR_INVALID,
                        format!("block {seq}: bad sequence or size"),
                    );
                }
                w.next_seq += 1;
                let bytes = match &mut w.inflate {
                    Some(z) => {
                        if z.write_all(payload).and_then(|_| z.flush()).is_err() {
                            self.write = Some(w);
                            return fail(self, ERR_FAILED, "inflate failed".into());
                        }
                        std::mem::take(z.get_mut())
                    }
                    None => {
                        if payload.len() > w.block_size {
                            self.log.errors.push("block larger than announced".into());
                        }
                        payload.to_vec()
                    }
                };
                let at = w.offset + w.written;
                if at + bytes.len() > self.log.flash.len() {
                    self.write = Some(w);
                    return fail(self, ERR_FAILED, "write past the end of flash".into());
                }
                self.log.flash[at..at + bytes.len()].copy_from_slice(&bytes);
                w.written += bytes.len();
                self.log.written_end = self.log.written_end.max(at + bytes.len());
                if w.inflate.is_some() && w.written > w.size {
                    self.log
                        .errors
                        .push("inflated past the announced size".into());
                }
                self.write = Some(w);
                ok(self, 0)
            }
            op::FLASH_END | op::FLASH_DEFL_END => {
                self.write = None;
                let reply = ok(self, 0);
                // FLASH_END with 0 reboots: out of the stub, back into the ROM loader.
                if opcode == op::FLASH_END && u32_at(data, 0) == 0 {
                    self.stub = false;
                }
                reply
            }
            op::SPI_FLASH_MD5 => {
                let (addr, size) = (u32_at(data, 0) as usize, u32_at(data, 4) as usize);
                let Some(region) = self.log.flash.get(addr..addr + size) else {
                    return fail(self, ERR_FAILED, "MD5 past the end of flash".into());
                };
                let digest: [u8; 16] = Md5::digest(region).into();
                // The ROM sends the digest as 32 hex characters, the stub as 16 bytes.
                let body = if self.stub {
                    digest.to_vec()
                } else {
                    digest
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                        .into_bytes()
                };
                vec![self.reply(opcode, 0, &body, None)]
            }
            other => {
                self.log.unknown.push(other);
                eprintln!(
                    "rom stub: unknown command {other:#04x} ({} bytes)",
                    data.len()
                );
                vec![self.reply(opcode, 0, &[], Some(ERR_INVALID))]
            }
        }
    }
}
