//! SAM against the reference vectors in `$BADGE_SHARED/sam-vectors` (default
//! `<manifest>/../../shared/sam-vectors`): PCM bytes (sha256 and raw), phoneme strings and
//! per-stage debug traces.

use badge_firmware::sam::{
    self, phonemes::phoneme_name, reciter, FrameTable, Mode, PhonemeTable, Recited, StageObserver,
    Voice,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn vectors_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BADGE_SHARED") {
        Some(s) => PathBuf::from(s).join("sam-vectors"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/sam-vectors"),
    };
    if dir.join("MANIFEST.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: SAM reference vectors not found at {}, set BADGE_SHARED",
            dir.display()
        );
        None
    }
}

struct Row {
    file: String,
    input: String,
    mode: Mode,
    voice: Voice,
    num_samples: usize,
    sha256: String,
    phonemes_file: String,
    debug_file: String,
}

fn manifest(dir: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let num = |n: &str| f[col(n)].parse::<u32>().unwrap();
            Row {
                file: f[col("file")].to_string(),
                input: f[col("input_text")].to_string(),
                mode: if f[col("mode")] == "phonetic" {
                    Mode::Phonetic
                } else {
                    Mode::Text
                },
                voice: Voice {
                    speed: num("speed") as u8,
                    pitch: num("pitch") as u8,
                    mouth: num("mouth") as u8,
                    throat: num("throat") as u8,
                },
                num_samples: num("num_samples") as usize,
                sha256: f[col("sha256_pcm")].to_string(),
                phonemes_file: f[col("phonemes_file")].to_string(),
                debug_file: f[col("debug_file")].to_string(),
            }
        })
        .collect()
}

/// PCM bytes of a WAV file's data chunk (tolerates the reference's wrong RIFF size).
fn wav_data(bytes: &[u8]) -> &[u8] {
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let id = &bytes[i..i + 4];
        let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            return &bytes[i + 8..(i + 8 + len).min(bytes.len())];
        }
        i += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

/// What the reference's debug trace contains, parsed.
#[derive(Default, Debug)]
struct Trace {
    rules: Vec<String>,
    reciter_output: Option<Vec<u8>>,
    tables: Vec<Vec<(u8, u8, u8)>>,
    frames: Vec<Vec<[u8; 8]>>,
}

fn parse_trace(bytes: &[u8]) -> Trace {
    let mut t = Trace::default();
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let text_mode = lines[0].starts_with(b"text input:");
    let mut i = 1;
    while i < lines.len() {
        let l = lines[i];
        if let Some(r) = l.strip_prefix(b"Applying rule: ") {
            t.rules.push(String::from_utf8_lossy(r).into_owned());
        } else if text_mode && t.reciter_output.is_none() {
            if let Some(r) = l.strip_prefix(b"phonetic input: ") {
                t.reciter_output = Some(r.to_vec());
            }
        }
        if l == b"Internal Phoneme presentation:" {
            let mut rows = Vec::new();
            i += 4;
            while !lines[i].starts_with(b"====") {
                let s = String::from_utf8_lossy(lines[i]);
                let tok: Vec<&str> = s.split_whitespace().collect();
                let n = tok.len();
                rows.push((
                    tok[0].parse().unwrap(),
                    tok[n - 2].parse().unwrap(),
                    tok[n - 1].parse().unwrap(),
                ));
                i += 1;
            }
            t.tables.push(rows);
        }
        if l == b"Final data for speech output:" {
            let mut rows = Vec::new();
            i += 4;
            while !lines[i].starts_with(b"====") {
                let s = String::from_utf8_lossy(lines[i]);
                let v: Vec<u8> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
                rows.push(v.try_into().unwrap());
                i += 1;
            }
            t.frames.push(rows);
        }
        i += 1;
    }
    t
}

#[derive(Default)]
struct Collect {
    rules: Vec<String>,
    reciter_output: Option<Vec<u8>>,
    tables: Vec<Vec<(u8, u8, u8)>>,
    frames: Vec<Vec<[u8; 8]>>,
}

impl StageObserver for Collect {
    fn rule(&mut self, rule: &[u8]) {
        let mut buf = [0u8; 300];
        let n = reciter::format_rule(rule, &mut buf);
        self.rules
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    fn reciter_output(&mut self, r: &Recited) {
        let b = r.buffer();
        let end = b.iter().position(|&c| c == 0x9B).map_or(256, |p| p + 1);
        self.reciter_output = Some(b[..end].to_vec());
    }
    fn parsed(&mut self, t: &PhonemeTable) {
        self.tables.push(t.entries().collect());
    }
    fn processed(&mut self, t: &PhonemeTable) {
        self.tables.push(t.entries().collect());
    }
    fn frames(&mut self, f: &FrameTable) {
        self.frames.push((0..255).map(|i| f.row(i)).collect());
    }
}

fn first_diff<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() != b.len() {
            Some(a.len().min(b.len()))
        } else {
            None
        })
}

fn check_vector(file: &str) {
    let Some(dir) = vectors_dir() else { return };
    let rows = manifest(&dir);
    let row = rows
        .iter()
        .find(|r| r.file == file)
        .expect("vector listed in MANIFEST.tsv");
    let expected_wav = std::fs::read(dir.join(&row.file)).unwrap();
    let expected = wav_data(&expected_wav);
    let trace = parse_trace(&std::fs::read(dir.join(&row.debug_file)).unwrap());
    let expected_phonemes = std::fs::read(dir.join(&row.phonemes_file)).unwrap();
    let expected_phonemes = expected_phonemes
        .strip_suffix(b"\n")
        .unwrap_or(&expected_phonemes);

    // Stage by stage, one reference pass.
    let words: Vec<&str> = row.input.split_whitespace().collect();
    let line = words.join(" ");
    let mut obs = Collect::default();
    let mut pcm = Vec::new();
    let n = sam::run_pass_traced(line.as_bytes(), row.mode, &row.voice, &mut pcm, &mut obs)
        .expect("reference input is valid");

    match row.mode {
        Mode::Text => {
            assert_eq!(obs.rules, trace.rules, "{file}: reciter rules differ");
            let got = obs.reciter_output.as_ref().unwrap();
            assert_eq!(
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(trace.reciter_output.as_ref().unwrap()),
                "{file}: reciter output differs from trace"
            );
            let r =
                reciter::recite(sam::Line::new(line.as_bytes(), Mode::Text).as_bytes()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(r.phonemes()),
                String::from_utf8_lossy(expected_phonemes),
                "{file}: phoneme string differs"
            );
        }
        Mode::Phonetic => {
            let l = sam::Line::new(line.as_bytes(), Mode::Phonetic);
            assert_eq!(&l.as_bytes()[..l.as_bytes().len() - 1], expected_phonemes);
        }
    }
    assert_eq!(
        obs.tables.len(),
        trace.tables.len(),
        "{file}: number of phoneme tables"
    );
    for (k, (got, want)) in obs.tables.iter().zip(&trace.tables).enumerate() {
        if let Some(i) = first_diff(got, want) {
            let name = |v: &Vec<(u8, u8, u8)>| {
                v.get(i)
                    .map(|e| (String::from_utf8_lossy(&phoneme_name(e.0)).into_owned(), *e))
            };
            panic!(
                "{file}: phoneme table {} ({}) differs first at row {i}: got {:?}, want {:?}",
                k,
                if k == 0 { "parsed" } else { "after rules" },
                name(got),
                name(want)
            );
        }
    }
    assert_eq!(
        obs.frames.len(),
        trace.frames.len(),
        "{file}: number of frame tables"
    );
    for (k, (got, want)) in obs.frames.iter().zip(&trace.frames).enumerate() {
        if let Some(i) = first_diff(got, want) {
            panic!(
                "{file}: frame table of phrase {k} differs first at frame {i}: got {:?}, want {:?}",
                got[i], want[i]
            );
        }
    }
    assert_eq!(n, pcm.len());
    if let Some(i) = first_diff(&pcm, expected) {
        panic!(
            "{file}: PCM differs first at sample {i} (got {} samples, want {}): got {:?}, want {:?}",
            pcm.len(),
            expected.len(),
            pcm.get(i),
            expected.get(i)
        );
    }
    assert_eq!(pcm.len(), row.num_samples);
    assert_eq!(hex(&Sha256::digest(&pcm)), row.sha256, "{file}: sha256");

    // The public convenience API gives the same bytes.
    let mut api = Vec::new();
    let m = match row.mode {
        Mode::Text => sam::speak_text(&row.input, &row.voice, &mut api),
        Mode::Phonetic => sam::speak_phonetic(&row.input, &row.voice, &mut api),
    }
    .unwrap();
    assert_eq!(m, row.num_samples);
    assert!(api == expected, "{file}: speak_* output differs");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

macro_rules! vector_tests {
    ($($name:ident => $file:expr,)*) => {$(
        #[test]
        fn $name() { check_vector($file); }
    )*};
}

vector_tests! {
    vector_a_default => "sam_a_default.wav",
    vector_a_robot => "sam_a_robot.wav",
    vector_b_default => "sam_b_default.wav",
    vector_b_robot => "sam_b_robot.wav",
    vector_c_default => "sam_c_default.wav",
    vector_c_robot => "sam_c_robot.wav",
    vector_g_default => "sam_g_default.wav",
    vector_g_robot => "sam_g_robot.wav",
    vector_h_default => "sam_h_default.wav",
    vector_h_robot => "sam_h_robot.wav",
    vector_p1_default => "sam_p1_default.wav",
    vector_p1_robot => "sam_p1_robot.wav",
    vector_p2_default => "sam_p2_default.wav",
    vector_p2_robot => "sam_p2_robot.wav",
}

#[test]
fn manifest_is_fully_covered() {
    let Some(dir) = vectors_dir() else { return };
    let listed: Vec<String> = manifest(&dir).into_iter().map(|r| r.file).collect();
    assert_eq!(listed.len(), 14, "new vectors: add a test per vector");
}

// ---------------------------------------------------------------------------------------
// Tests that need no reference data.

use proptest::prelude::*;
use sam::{Channels, Pcm16Writer, Volume};

fn pcm(input: &[u8], mode: Mode, voice: &Voice) -> Result<Vec<u8>, sam::SamError> {
    let mut v = Vec::new();
    sam::speak(input, mode, voice, &mut v).map(|n| {
        assert_eq!(n, v.len());
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        phonetic in any::<bool>(),
        speed in 1u8..=255, pitch in any::<u8>(), mouth in any::<u8>(), throat in any::<u8>(),
    ) {
        let voice = Voice { speed, pitch, mouth, throat };
        let mode = if phonetic { Mode::Phonetic } else { Mode::Text };
        let _ = pcm(&bytes, mode, &voice);
        // One raw pass with every stage exposed.
        let line = &bytes[..bytes.len().min(sam::MAX_LINE)];
        let _ = sam::run_pass_traced(line, mode, &voice, &mut sam::NullSink::default(), &mut sam::NoObserver);
        let _ = reciter::recite(line);
        let _ = PhonemeTable::parse(line).map(|mut t| t.apply_rules());
    }

    #[test]
    fn arbitrary_strings_never_panic(text in "\\PC{0,200}", phonetic in any::<bool>()) {
        let mut sink = sam::NullSink::default();
        let r = if phonetic {
            sam::speak_phonetic(&text, &Voice::SAM, &mut sink)
        } else {
            sam::speak_text(&text, &Voice::SAM, &mut sink)
        };
        if let Ok(n) = r { prop_assert_eq!(n, sink.samples); }
    }

    #[test]
    fn phoneme_words_render(words in proptest::collection::vec("(AA|IY|EH|/H|S|T|K|R|L|N|DH|ER|OW|AY)[1-8]?", 1..30)) {
        let text = words.join(" ");
        let out = pcm(text.as_bytes(), Mode::Phonetic, &Voice::SAM).unwrap();
        prop_assert!(!out.is_empty());
    }
}

#[test]
fn empty_and_blank_input_give_no_samples() {
    for s in ["", " ", "\t\n  "] {
        assert_eq!(pcm(s.as_bytes(), Mode::Text, &Voice::SAM).unwrap().len(), 0);
        assert_eq!(
            pcm(s.as_bytes(), Mode::Phonetic, &Voice::SAM)
                .unwrap()
                .len(),
            0
        );
    }
}

#[test]
fn invalid_phonemes_are_an_error_without_audio() {
    let mut v = Vec::new();
    let e = sam::speak_phonetic("/HEH4LOW @@@", &Voice::SAM, &mut v).unwrap_err();
    assert!(matches!(
        e,
        sam::SamError::InvalidPhoneme { byte: b'@', .. }
    ));
    assert!(v.is_empty());
    // An error in a later pass of a long input also produces nothing.
    let long = format!("{} XX@", "AA ".repeat(200));
    assert!(sam::speak_phonetic(&long, &Voice::SAM, &mut v).is_err());
    assert!(v.is_empty());
}

const SENTENCES: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog while the little badge keeps on talking about science, music and the weather outside today.",
    "Once upon a time there was a little girl named Lucy who lived in a small wooden house at the edge of a very large and very dark forest.",
    "She liked to read books about computers, robots and the stars, and every single evening she counted to 1234 before going to sleep.",
    "Numbers like 42, 1982 and 65535 are spoken digit by digit by the reciter rules of this old speech synthesizer program from the eighties!",
];

#[test]
fn long_text_is_spoken_sentence_by_sentence() {
    let long = SENTENCES.join(" ");
    assert!(long.len() > 254);
    // No two sentences fit into one pass, so every sentence is its own pass.
    assert!(SENTENCES.iter().all(|s| s.len() > sam::MAX_LINE / 2));
    let whole = pcm(long.as_bytes(), Mode::Text, &Voice::SAM).unwrap();
    let mut parts = Vec::new();
    for s in SENTENCES {
        parts.extend(pcm(s.as_bytes(), Mode::Text, &Voice::SAM).unwrap());
    }
    assert_eq!(whole.len(), parts.len());
    assert!(
        whole == parts,
        "long input must equal its sentences spoken one by one"
    );
    assert!(whole.len() > 140_000, "{}", whole.len());
}

#[test]
fn long_input_without_sentence_ends_is_not_cut() {
    let words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda ".repeat(12);
    let full = pcm(words.as_bytes(), Mode::Text, &Voice::SAM).unwrap();
    let half = pcm(
        &words.as_bytes()[..words.len() / 2],
        Mode::Text,
        &Voice::SAM,
    )
    .unwrap();
    assert!(
        full.len() > half.len() * 3 / 2,
        "{} vs {}",
        full.len(),
        half.len()
    );
    // Phonetic mode too.
    let ph = "/HEH4LOW WERLD ".repeat(40);
    let full = pcm(ph.as_bytes(), Mode::Phonetic, &Voice::SAM).unwrap();
    let one = pcm(b"/HEH4LOW WERLD", Mode::Phonetic, &Voice::SAM).unwrap();
    assert!(full.len() > one.len() * 30);
    // A single enormous word.
    let word = "SUPERCALIFRAGILISTIC".repeat(40);
    assert!(!pcm(word.as_bytes(), Mode::Text, &Voice::SAM)
        .unwrap()
        .is_empty());
}

#[test]
fn sink_receives_bounded_chunks() {
    let mut max = 0;
    let mut total = 0;
    let mut sink = sam::FnSink(|s: &[u8]| {
        max = max.max(s.len());
        total += s.len();
    });
    let n = sam::speak_text(SENTENCES[0], &Voice::SAM, &mut sink).unwrap();
    assert_eq!(n, total);
    assert!(max <= sam::render::CHUNK_SAMPLES);
}

#[test]
fn pcm16_sink_mono_stereo_volume() {
    let pcm8 = pcm(b"Hello", Mode::Text, &Voice::SAM).unwrap();
    let mut mono: Vec<i16> = Vec::new();
    let mut w = Pcm16Writer::new(&mut mono, Volume::FULL, Channels::Mono);
    sam::speak_text("Hello", &Voice::SAM, &mut w).unwrap();
    assert_eq!(mono.len(), pcm8.len());
    for (a, b) in pcm8.iter().zip(&mono) {
        assert_eq!(((*a as i16) - 128) << 8, *b);
    }
    let mut stereo: Vec<i16> = Vec::new();
    let mut w = Pcm16Writer::new(&mut stereo, Volume(128), Channels::Stereo);
    sam::speak_text("Hello", &Voice::SAM, &mut w).unwrap();
    assert_eq!(stereo.len(), 2 * pcm8.len());
    for (i, a) in pcm8.iter().enumerate() {
        let full = (((*a as i16) - 128) << 8) as i32;
        assert_eq!(stereo[2 * i], stereo[2 * i + 1]);
        assert_eq!(stereo[2 * i] as i32, full * 128 / 255);
    }
    assert_eq!(Volume(0).convert(255), 0);
    assert_eq!(Volume::FULL.convert(0), -32768);
    assert_eq!(Volume::FULL.convert(255), 32512);
}

#[test]
fn voice_presets() {
    assert_eq!(Voice::preset("sam"), Some(Voice::default()));
    assert_eq!(
        Voice::preset("robot"),
        Some(Voice {
            speed: 100,
            pitch: 50,
            mouth: 200,
            throat: 200
        })
    );
    assert_eq!(Voice::preset("ROBOT"), Voice::preset("robot"));
    assert_eq!(Voice::preset("nobody"), None);
    assert_eq!(Voice::preset_names().collect::<Vec<_>>(), ["sam", "robot"]);
}
