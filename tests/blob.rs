//! Q8_0 quantization and the blob: round trips, every loader error, mutation fuzzing, and a
//! golden byte-identical export.

mod common;

use badge_firmware::config::KvCacheKind;
use badge_firmware::format::{Blob, BlobError, TensorData, TensorKind, HEADER_SIZE};
use badge_firmware::quant;
use proptest::prelude::*;

fn aligned(b: &[u8]) -> badge::util::AlignedBytes {
    badge::util::AlignedBytes::from_slice(b)
}

#[test]
fn quantization_covers_every_element_and_bounds_error() {
    // Row length 224 (badge-6m) with GS 32: a loop that skipped the tail would leave zeros.
    let x = common::random_values(224 * 3, 4, 1.0);
    let mut q = vec![0i8; x.len()];
    let mut s = vec![0f32; x.len() / 32];
    quant::quantize(&x, 32, &mut q, &mut s);
    let mut r = vec![0f32; x.len()];
    quant::dequantize(&q, &s, 32, &mut r);
    for (i, (a, b)) in x.iter().zip(&r).enumerate() {
        let scale = s[i / 32];
        assert!(
            (a - b).abs() <= scale / 2.0 + 1e-7,
            "element {i}: {a} vs {b}"
        );
        assert!(
            a.abs() <= scale / 2.0 || *b != 0.0,
            "element {i} was skipped"
        );
    }
}

#[test]
fn adversarial_groups() {
    let mut x = vec![0.0f32; 64];
    x.extend(std::iter::repeat_n(1e-3, 63).chain([1000.0])); // one huge outlier
    x.extend((0..64).map(|i| if i % 2 == 0 { 127.0 } else { -127.0 }));
    let mut q = vec![0i8; x.len()];
    let mut s = vec![0f32; 3];
    quant::quantize(&x, 64, &mut q, &mut s);
    assert_eq!(s[0], 0.0);
    assert!(q[..64].iter().all(|&v| v == 0));
    assert_eq!(q[127], 127);
    assert!(
        q[64..127].iter().all(|&v| v == 0),
        "small values next to an outlier round to 0"
    );
    assert_eq!(s[2], 1.0);
    assert!(q[128..]
        .iter()
        .enumerate()
        .all(|(i, &v)| v == if i % 2 == 0 { 127 } else { -127 }));
    assert!(
        q.iter().all(|&v| v != -128),
        "-128 is never produced (symmetric range)"
    );
}

#[test]
fn group_size_for_6m_is_lowered_and_forced_sizes_are_checked() {
    let c = badge::config::load_model_config(&common::repo().join("configs/models/badge-6m.toml"))
        .unwrap();
    let (gs, note) =
        badge::export::resolve_group_size(&c, badge::export::GroupSize::Auto(64)).unwrap();
    assert_eq!(gs, 32);
    assert!(note.unwrap().contains("using 32"));
    let err = badge::export::resolve_group_size(&c, badge::export::GroupSize::Forced(64))
        .unwrap_err()
        .to_string();
    assert!(err.contains("64") && err.contains("224"), "{err}");
}

#[test]
fn every_field_round_trips() {
    let c = common::tiny_config();
    let (bytes, w) = common::random_blob(&c, 11, KvCacheKind::F16);
    let a = aligned(&bytes);
    let blob = Blob::parse(a.as_slice()).unwrap();
    assert_eq!(blob.config, c);
    assert_eq!(blob.group_size, 32);
    assert_eq!(blob.kv_cache, KvCacheKind::F16);
    assert_eq!(blob.voice, badge_firmware::config::Voice::default());
    assert_eq!((blob.bos_id, blob.eos_id), (1, 2));
    assert_eq!(blob.template, badge::config::DEFAULT_TEMPLATE);
    assert_eq!(blob.tokenizer.n_tokens, c.vocab_size as usize);
    for i in 0..blob.tensor_count() {
        let t = blob.tensor_at(i).unwrap();
        assert_eq!(t.offset % 16, 0);
        let name = if t.kind.is_per_layer() {
            format!("layers.{}.{}", t.layer, t.kind.name())
        } else {
            t.kind.name().to_string()
        };
        let orig = &w[&name];
        match t.data {
            TensorData::F32(v) => assert_eq!(v, orig.as_slice()),
            TensorData::Q8 { q, scales } => {
                let mut exp_q = vec![0i8; orig.len()];
                let mut exp_s = vec![0f32; orig.len() / 32];
                quant::quantize(orig, 32, &mut exp_q, &mut exp_s);
                assert_eq!(q, exp_q.as_slice());
                assert_eq!(scales, exp_s.as_slice());
            }
        }
    }
}

#[test]
fn exporting_twice_gives_identical_bytes() {
    let c = common::tiny_config();
    let (a, _) = common::random_blob(&c, 5, KvCacheKind::F32);
    let (b, _) = common::random_blob(&c, 5, KvCacheKind::F32);
    assert_eq!(a, b);
}

fn patched(bytes: &[u8], at: usize, v: &[u8], fix_crc: bool) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + v.len()].copy_from_slice(v);
    if fix_crc {
        let crc = badge_firmware::format::crc32(&b[HEADER_SIZE..]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[track_caller]
fn err(b: &[u8]) -> BlobError {
    Blob::parse(aligned(b).as_slice()).expect_err("must be rejected")
}

#[test]
fn every_loader_error_path() {
    let c = common::tiny_config();
    let (good, _) = common::random_blob(&c, 2, KvCacheKind::F32);
    assert!(matches!(err(&good[..10]), BlobError::TooShort { .. }));
    assert!(matches!(
        err(&patched(&good, 0, b"XXXX", false)),
        BlobError::BadMagic { .. }
    ));
    assert!(matches!(
        err(&patched(&good, 4, &9u32.to_le_bytes(), false)),
        BlobError::UnsupportedVersion { found: 9, .. }
    ));
    assert!(matches!(
        err(&patched(&good, 8, &64u32.to_le_bytes(), false)),
        BlobError::BadHeaderSize { .. }
    ));
    assert!(matches!(
        err(&good[..good.len() - 16]),
        BlobError::LengthMismatch { .. }
    ));
    let last = good.len() - 1;
    assert!(matches!(
        err(&patched(&good, last, &[good[last] ^ 1], false)),
        BlobError::CrcMismatch { .. }
    ));
    assert!(matches!(
        err(&patched(&good, 20, &0u32.to_le_bytes(), true)),
        BlobError::BadConfig { field: "dim", .. }
    ));
    assert!(matches!(
        err(&patched(&good, 56, &48u32.to_le_bytes(), true)),
        BlobError::BadGroupSize { .. }
    ));
    assert!(matches!(
        err(&patched(&good, 60, &7u32.to_le_bytes(), true)),
        BlobError::BadKvCache { value: 7 }
    ));
    assert!(matches!(
        err(&patched(&good, 76, &3u32.to_le_bytes(), true)),
        BlobError::Misaligned { .. }
    ));
    assert!(matches!(
        err(&patched(&good, 80, &u32::MAX.to_le_bytes(), true)),
        BlobError::OutOfBounds { .. }
    ));
    // Template without placeholders.
    let tpl_off = u32::from_le_bytes(good[84..88].try_into().unwrap()) as usize;
    assert!(matches!(
        err(&patched(&good, tpl_off + 3, b"X", true)),
        BlobError::BadTemplate { .. }
    ));
    // Tensor table: the first entry's kind changed to a duplicate of the second.
    let tt = u32::from_le_bytes(good[92..96].try_into().unwrap()) as usize;
    let second_kind = good[tt + 32];
    let second_layer = [good[tt + 34], good[tt + 35]];
    let dup = patched(
        &patched(&good, tt, &[second_kind], false),
        tt + 2,
        &second_layer,
        true,
    );
    let e = Blob::parse(aligned(&dup).as_slice()).err();
    assert!(
        matches!(
            e,
            Some(
                BlobError::WrongShape { .. }
                    | BlobError::DuplicateTensor { .. }
                    | BlobError::BadTensor { .. }
            )
        ),
        "{e:?} kind {second_kind} layer {second_layer:?}"
    );
    // Fewer tensors than the config needs.
    let count = u32::from_le_bytes(good[96..100].try_into().unwrap());
    assert!(matches!(
        err(&patched(&good, 96, &(count - 1).to_le_bytes(), true)),
        BlobError::MissingTensor {
            kind: TensorKind::FinalNorm,
            ..
        }
    ));
    assert!(matches!(
        err(&patched(&good, tt, &[99], true)),
        BlobError::BadTensor { .. }
    ));
    // Misaligned start in memory.
    let mut shifted = vec![0u8; good.len() + 1];
    shifted[1..].copy_from_slice(&good);
    let a = aligned(&shifted);
    assert!(matches!(
        Blob::parse(&a.as_slice()[1..]),
        Err(BlobError::Misaligned { .. })
    ));
    // Every error has a message.
    assert!(!err(&good[..10]).to_string().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn mutated_and_truncated_blobs_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>(), fix_crc in any::<bool>()) {
        static GOOD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let good = GOOD.get_or_init(|| common::random_blob(&common::tiny_config(), 3, KvCacheKind::F32).0);
        let mut b = good.clone();
        for (at, v) in flips {
            let i = at % b.len();
            b[i] ^= v;
        }
        if fix_crc {
            let crc = badge_firmware::format::crc32(&b[HEADER_SIZE..]);
            b[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = Blob::parse(aligned(&b).as_slice());
        let cut = cut % (b.len() + 1);
        let _ = Blob::parse(aligned(&b[..cut]).as_slice());
        // Whatever parses must also run without panicking.
        if let Ok(blob) = Blob::parse(aligned(&b).as_slice()) {
            let mut e = badge_firmware::engine::Engine::new(&blob, badge_firmware::workers::SingleWorker).unwrap();
            let _ = e.forward(1, 0);
        }
    }
}

#[test]
fn memory_plan_names_what_overflows_the_board() {
    let board = badge::config::board::Board::load(
        &common::repo().join("configs/boards/esp32s3-n16r8.toml"),
    )
    .unwrap();
    let c = badge::config::load_model_config(&common::repo().join("configs/models/badge-6m.toml"))
        .unwrap();
    let info = badge::export::info::ModelInfo::of(&c);
    let plan = |kv| {
        let s = badge_firmware::engine::RunStateSize::of(&c, 32, kv);
        badge::config::board::MemoryPlan::new(&board, info.int8_bytes, s).unwrap()
    };
    // badge-6m with weights copied to PSRAM and an f32 KV cache is just over 8 MB.
    let err = plan(KvCacheKind::F32).check().unwrap_err().to_string();
    assert!(
        err.contains("PSRAM") && err.contains("KV cache") && err.contains("--kv-cache f16"),
        "{err}"
    );
    // Halving the KV cache makes it fit.
    let ok = plan(KvCacheKind::F16);
    ok.check().unwrap();
    assert!(ok.psram_headroom > 0 && ok.flash_headroom > 0);
    // The firmware line comes from the Xtensa measurement (scripts/check-firmware.sh), not a
    // fixed guess, and lands in the table's app partition.
    let fw = badge::config::board::FirmwareSize::measured().unwrap();
    assert!(fw.text > 0 && fw.libs_flash > 0, "{fw:?}");
    assert_eq!(
        ok.firmware_estimate,
        (fw.flash_measured() as f64 * badge::config::board::FIRMWARE_MARGIN).ceil() as u64
    );
    assert_eq!(
        (ok.app_partition.as_str(), ok.app_partition_bytes),
        ("factory", 0x300000)
    );
    assert_eq!(ok.app_headroom, 0x300000 - ok.firmware_estimate as i64);
    assert!(ok
        .table()
        .contains(&format!("firmware {:>10} B", ok.firmware_estimate)));
    // A blob larger than the model partition.
    let nothing = badge_firmware::engine::RunStateSize {
        activation_bytes: 0,
        kv_cache_bytes: 0,
    };
    let too_big = badge::config::board::MemoryPlan::new(&board, 20_000_000, nothing).unwrap();
    assert!(too_big
        .check()
        .unwrap_err()
        .to_string()
        .contains("partition"));
}
