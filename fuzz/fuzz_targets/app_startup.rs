//! The badge's start-up over a simulated flash holding the input as its model (the CRC fixed
//! up so mutations get past it): partition lookup, header, memory budget, streaming copy,
//! parse, engine and tokenizer, and a first forward step. For inputs whose last header byte (a
//! reserved one, which the loader ignores) is 1, the whole program instead (`app::run`: start-up, one question on a scripted console, the spoken
//! answer or the spoken error), which is slower because SAM renders audio. Either must return,
//! never panic: on the badge a panic while loading is a crash loop at boot.
#![no_main]

#[path = "../../firmware/tests/common/mod.rs"]
mod common;

use badge_firmware::app::{self, AppConfig, Clock, Peripherals, Speaker};
use badge_firmware::format::HEADER_SIZE;
use badge_firmware::sam::Pcm16Sink;
use badge_firmware::workers::SingleWorker;
use libfuzzer_sys::fuzz_target;

struct Console;
impl app::embedded_io::ErrorType for Console {
    type Error = core::convert::Infallible;
}
impl app::embedded_io::Write for Console {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// One typed question, always ready (the main loop polls the console between button checks).
struct Typed(&'static [u8]);
impl app::embedded_io::ErrorType for Typed {
    type Error = core::convert::Infallible;
}
impl app::embedded_io::Read for Typed {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}
impl app::embedded_io::ReadReady for Typed {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

struct Quiet;
impl Pcm16Sink for Quiet {
    fn write_pcm16(&mut self, _samples: &[i16]) {}
}
impl Speaker for Quiet {}

struct Still;
impl Clock for Still {
    fn millis(&self) -> u64 {
        0
    }
}

fuzz_target!(|data: &[u8]| {
    let mut blob = data.to_vec();
    if blob.len() >= HEADER_SIZE {
        common::fix_crc(&mut blob);
    }
    // The model partition starts at 64 KB here (on the badge at 3 MB): the same table
    // checks, a much smaller simulated flash to allocate per run.
    let mut flash = common::flash_at(0x1_0000, &blob);
    // 1 MB: many times the seeds' run state; zeroing more would dominate every execution.
    let mut cfg = AppConfig::new(1 << 20);
    cfg.generate.max_new_tokens = 8;
    if data.get(HEADER_SIZE - 1) != Some(&1) {
        if let Ok(loaded) = app::load_model(&mut flash, &cfg) {
            if let Ok(blob) = loaded.blob() {
                if let Ok(mut model) = app::Model::new(blob, SingleWorker) {
                    let bos = model.blob.bos_id;
                    model.engine.forward(bos, 0).expect("BOS at position 0");
                }
            }
        }
        return;
    }
    let mut io = Peripherals {
        console_in: Typed(b"who are you?\n"),
        console_out: Console,
        speaker: Quiet,
        clock: Still,
        buttons: app::NoButtons,
    };
    let _ = app::run(&mut flash, SingleWorker, &mut io, &cfg, &mut |_| {});
});
