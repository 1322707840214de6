//! The badge's int8 engine against candle on the same (dequantized) weights, one vs two
//! workers, and the KV cache variants.

mod common;

use badge_firmware::config::{KvCacheKind, ModelConfig};
use badge_firmware::engine::Engine;
use badge_firmware::format::Blob;
use badge_firmware::workers::{SingleWorker, ThreadWorkers};
use candle_core::{Device, Tensor};

/// Top-1 agreement and the largest logit difference relative to the logit range.
fn compare(c: &ModelConfig, kv: KvCacheKind, ids: &[u32]) -> (f64, f32) {
    let (bytes, _) = common::random_blob(c, 21, kv);
    let a = badge::util::AlignedBytes::from_slice(&bytes);
    let blob = Blob::parse(a.as_slice()).unwrap();
    let reference = common::candle_on_dequantized(&blob);
    let want = reference
        .forward(&Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap())
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut e = Engine::new(&blob, SingleWorker).unwrap();
    let (mut agree, mut max_rel) = (0, 0.0f32);
    for (pos, &t) in ids.iter().enumerate() {
        let got = e.forward(t, pos).unwrap();
        let w = &want[pos];
        let range =
            w.iter().cloned().fold(f32::MIN, f32::max) - w.iter().cloned().fold(f32::MAX, f32::min);
        let diff = got
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        max_rel = max_rel.max(diff / range);
        agree +=
            usize::from(badge_firmware::sampler::argmax(got) == badge_firmware::sampler::argmax(w));
    }
    (agree as f64 / ids.len() as f64, max_rel)
}

fn ids(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect()
}

/// Activation quantization to int8 (error ≤ half a step, i.e. ≤ 1/254 of each group's max per
/// value) through a handful of matmuls keeps logits within a few percent of their range; the
/// same bound holds for the f16/int8 KV caches, whose per-value errors are smaller still or alike.
#[test]
fn engine_matches_candle_on_dequantized_weights() {
    let c = common::tiny_config();
    for kv in [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8] {
        let (agree, rel) = compare(&c, kv, &ids(32, c.vocab_size));
        eprintln!("{kv:?}: top-1 agreement {agree:.3}, max logit error {rel:.4} of range");
        assert!(rel < 0.05, "{kv:?}: logits differ by {rel} of their range");
        assert!(agree >= 0.9, "{kv:?}: top-1 agreement {agree}");
    }
}

#[test]
fn badge_6m_shaped_random_weights_agree() {
    let c = badge::config::load_model_config(&common::repo().join("configs/models/badge-6m.toml"))
        .unwrap();
    let (agree, rel) = compare(&c, KvCacheKind::F32, &ids(24, c.vocab_size));
    eprintln!("badge-6m: top-1 agreement {agree:.3}, max logit error {rel:.4} of range");
    assert!(rel < 0.05 && agree >= 0.9, "agreement {agree}, error {rel}");
}

/// Logits of `ids` at positions 0.., as bits, from one engine.
fn logit_bits<W: badge_firmware::workers::Workers>(
    e: &mut Engine<'_, W>,
    ids: &[u32],
) -> Vec<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(pos, &t)| {
            e.forward(t, pos)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn one_and_two_workers_are_bit_identical() {
    let c = common::tiny_config();
    for kv in [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8] {
        let (bytes, _) = common::random_blob(&c, 8, kv);
        let a = badge::util::AlignedBytes::from_slice(&bytes);
        let blob = Blob::parse(a.as_slice()).unwrap();
        let mut one = Engine::new(&blob, SingleWorker).unwrap();
        let mut two = Engine::new(&blob, ThreadWorkers::new()).unwrap();
        let ids = ids(32, c.vocab_size);
        let want = logit_bits(&mut one, &ids);
        // The same engine again (the KV cache is overwritten position by position), so the
        // helper thread is reused across many hand-offs, then a fresh pair.
        for round in 0..3 {
            assert_eq!(logit_bits(&mut two, &ids), want, "{kv:?}, round {round}");
        }
        let mut two = Engine::new(&blob, ThreadWorkers::new()).unwrap();
        assert_eq!(logit_bits(&mut two, &ids), want, "{kv:?}, fresh engine");
        assert!(
            one.forward(0, c.seq_len as usize).is_err(),
            "positions past seq_len are refused"
        );
        assert!(
            one.forward(c.vocab_size, 0).is_err(),
            "tokens past the vocabulary are refused"
        );
    }
}

/// The 6M shape: group size 32, head size 28 (not a multiple of 8), rows split in many chunks.
#[test]
fn one_and_two_workers_are_bit_identical_on_the_6m_shape() {
    let mut c =
        badge::config::load_model_config(&common::repo().join("configs/models/badge-6m.toml"))
            .unwrap();
    c.n_layers = 2;
    c.seq_len = 24;
    let (bytes, _) = common::random_blob(&c, 5, KvCacheKind::F32);
    let a = badge::util::AlignedBytes::from_slice(&bytes);
    let blob = Blob::parse(a.as_slice()).unwrap();
    assert_eq!((blob.group_size, c.head_dim()), (32, 28));
    let ids = ids(24, c.vocab_size);
    let want = logit_bits(&mut Engine::new(&blob, SingleWorker).unwrap(), &ids);
    let got = logit_bits(&mut Engine::new(&blob, ThreadWorkers::new()).unwrap(), &ids);
    assert_eq!(got, want);
}

#[test]
fn run_state_is_reported_and_smaller_kv_caches_save_memory() {
    let c = badge::config::load_model_config(&common::repo().join("configs/models/badge-6m.toml"))
        .unwrap();
    let f32_kv = badge_firmware::engine::RunState::new(&c, 32, KvCacheKind::F32).kv_cache_bytes();
    let f16_kv = badge_firmware::engine::RunState::new(&c, 32, KvCacheKind::F16).kv_cache_bytes();
    let i8_kv = badge_firmware::engine::RunState::new(&c, 32, KvCacheKind::Int8).kv_cache_bytes();
    assert_eq!(f32_kv, 2 * 8 * 256 * 112 * 4);
    assert_eq!(f16_kv * 2, f32_kv);
    assert!(i8_kv < f16_kv * 6 / 10, "{i8_kv}");
    eprintln!("badge-6m KV cache: f32 {f32_kv} B, f16 {f16_kv} B, int8 {i8_kv} B");
}

/// The hand-off between the caller and the helper thread: thousands of jobs of many sizes in a
/// row (so the helper is sometimes early, sometimes late, sometimes asleep), each row written
/// exactly once with its own value, whichever thread claimed it.
#[test]
fn thread_workers_write_every_row_exactly_once() {
    use badge_firmware::workers::Workers;
    let w = ThreadWorkers::new();
    let mut out = vec![0f32; 1600];
    for i in 0..20_000usize {
        let n = 1 + (i * 7919) % out.len();
        let out = &mut out[..n];
        out.fill(-1.0);
        let job = |first: usize, rows: &mut [f32]| {
            for (k, r) in rows.iter_mut().enumerate() {
                assert_eq!(*r, -1.0, "row {} written twice", first + k);
                *r = (first + k) as f32 + i as f32 * 0.5;
            }
        };
        w.run_rows(out, &job);
        for (k, &r) in out.iter().enumerate() {
            assert_eq!(r, k as f32 + i as f32 * 0.5, "job {i}, row {k} of {n}");
        }
        if i % 5000 == 4999 {
            // Let the helper fall asleep, then hand it work again.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

#[test]
fn run_state_size_is_known_before_allocating() {
    let mut configs = vec![common::tiny_config()];
    for m in ["badge-tiny", "badge-1m", "badge-3m", "badge-6m"] {
        configs.push(
            badge::config::load_model_config(
                &common::repo().join(format!("configs/models/{m}.toml")),
            )
            .unwrap(),
        );
    }
    for c in configs {
        let gs =
            badge_firmware::quant::choose_group_size(64, &[c.dim as usize, c.hidden_dim as usize])
                .unwrap();
        for kv in [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8] {
            let planned = badge_firmware::engine::RunStateSize::of(&c, gs, kv);
            let real = badge_firmware::engine::RunState::new(&c, gs, kv);
            assert_eq!(
                planned.kv_cache_bytes,
                real.kv_cache_bytes(),
                "{c:?} {kv:?}"
            );
            assert_eq!(
                planned.activation_bytes,
                real.activation_bytes(),
                "{c:?} {kv:?}"
            );
            assert_eq!(planned.total(), real.byte_size());
        }
    }
}
