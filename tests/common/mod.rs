//! Shared test helpers: paths to the tree's data and to `../shared`, tiny configs, random weights.
#![allow(dead_code)]

pub use badge::util::random_values;
use badge_firmware::config::ModelConfig;
use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$BADGE_SHARED`, else `../shared` beside the checkout; `None` (with a loud message) when
/// absent. CI sets BADGE_SHARED.
pub fn shared(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("BADGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared"));
    let p = base.join(sub);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} not found; set BADGE_SHARED to the shared data folder (CI does)",
            p.display()
        );
        None
    }
}

pub fn tiny_config() -> ModelConfig {
    ModelConfig {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 300,
        seq_len: 32,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    }
}

/// Random weights for every parameter of `c` (norms near 1).
pub fn random_weights(c: &ModelConfig, seed: u64) -> badge::run::FlatParams {
    badge::train::model::parameter_shapes(c)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let v = if shape.len() == 1 {
                random_values(n, seed + i as u64, 0.2)
                    .into_iter()
                    .map(|x| 1.0 + x)
                    .collect()
            } else {
                random_values(n, seed + i as u64, 0.15)
            };
            (name, v)
        })
        .collect()
}

/// A small tokenizer trained on the bundled stories (exactly `vocab` tokens).
pub fn small_tokenizer(vocab: usize) -> badge::data::tokenizer::BadgeTokenizer {
    let stories = badge::data::read_stories(&repo().join("data/stories/stories.txt")).unwrap();
    badge::data::tokenizer::BadgeTokenizer::train(&stories, vocab).unwrap()
}

/// A blob of random weights for `c`, with a tokenizer of `c.vocab_size` tokens.
pub fn random_blob(
    c: &ModelConfig,
    seed: u64,
    kv: badge_firmware::config::KvCacheKind,
) -> (Vec<u8>, badge::run::FlatParams) {
    random_blob_full(c, seed, kv, Default::default(), |_| None)
}

/// [`random_blob`] with the given button prompts.
pub fn random_blob_with_prompts(
    c: &ModelConfig,
    seed: u64,
    kv: badge_firmware::config::KvCacheKind,
    prompts: badge_firmware::prompts::PromptsSpec,
) -> (Vec<u8>, badge::run::FlatParams) {
    random_blob_full(c, seed, kv, prompts, |_| None)
}

/// The answers of the bundled example owner's Q&A file (distinct, in file order).
pub fn example_answers() -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    badge::data::read_qa_csv(&repo().join("data/profile/qa.csv"))
        .unwrap()
        .into_iter()
        .map(|p| p.answer)
        .filter(|a| seen.insert(a.clone()))
        .collect()
}

/// [`random_blob`] with the answers section `answers` builds from the blob's tokenizer.
pub fn random_blob_with(
    c: &ModelConfig,
    seed: u64,
    kv: badge_firmware::config::KvCacheKind,
    answers: impl FnOnce(
        &badge::data::tokenizer::BadgeTokenizer,
    ) -> Option<badge_firmware::answers::AnswersSpec>,
) -> (Vec<u8>, badge::run::FlatParams) {
    random_blob_full(c, seed, kv, Default::default(), answers)
}

/// [`random_blob`] with button prompts and an answers section.
pub fn random_blob_full(
    c: &ModelConfig,
    seed: u64,
    kv: badge_firmware::config::KvCacheKind,
    prompts: badge_firmware::prompts::PromptsSpec,
    answers: impl FnOnce(
        &badge::data::tokenizer::BadgeTokenizer,
    ) -> Option<badge_firmware::answers::AnswersSpec>,
) -> (Vec<u8>, badge::run::FlatParams) {
    let tok = small_tokenizer(c.vocab_size as usize);
    let w = random_weights(c, seed);
    let gs = badge_firmware::quant::choose_group_size(64, &[c.dim as usize, c.hidden_dim as usize])
        .unwrap();
    let inputs = badge::export::BlobInputs {
        prompts,
        config: *c,
        tokenizer: &tok,
        template: badge::config::DEFAULT_TEMPLATE,
        voice: Default::default(),
        kv_cache: kv,
        group_size: gs,
        answers: answers(&tok),
    };
    let (blob, _) = badge::export::build_blob(&inputs, &w).unwrap();
    (blob, w)
}

/// candle over the dequantized blob weights: the same math without activation quantization.
pub fn candle_on_dequantized(
    blob: &badge_firmware::format::Blob<'_>,
) -> badge::train::model::Transformer {
    let device = candle_core::Device::Cpu;
    let mut params = badge::train::model::Params::new();
    for i in 0..blob.tensor_count() {
        let t = blob.tensor_at(i).unwrap();
        let name = if t.kind.is_per_layer() {
            format!("layers.{}.{}", t.layer, t.kind.name())
        } else {
            t.kind.name().to_string()
        };
        let values = match t.data {
            badge_firmware::format::TensorData::F32(v) => v.to_vec(),
            badge_firmware::format::TensorData::Q8 { q, scales } => {
                let mut out = vec![0f32; q.len()];
                badge_firmware::quant::dequantize(q, scales, blob.group_size, &mut out);
                out
            }
        };
        let shape: Vec<usize> = if t.kind.is_norm() {
            vec![t.cols]
        } else {
            vec![t.rows, t.cols]
        };
        params.insert(
            name,
            candle_core::Var::from_tensor(
                &candle_core::Tensor::from_vec(values, shape, &device).unwrap(),
            )
            .unwrap(),
        );
    }
    badge::train::model::build(&blob.config, &params, &device).unwrap()
}

/// The tiny curriculum with absolute paths, fewer steps and `qa_limit` Q&A pairs.
pub fn reduced_curriculum(
    dir: &std::path::Path,
    steps: [i64; 3],
    qa_limit: i64,
    every: i64,
) -> PathBuf {
    let repo = repo();
    let text = std::fs::read_to_string(repo.join("configs/badge-tiny.toml")).unwrap();
    let text = text
        .replace("\"../", &format!("\"{}/", repo.display()))
        .replace(
            "\"models/",
            &format!("\"{}/configs/models/", repo.display()),
        );
    let mut v: toml::Value = toml::from_str(&text).unwrap();
    v["sources"]["qa"]
        .as_table_mut()
        .unwrap()
        .insert("limit".into(), toml::Value::Integer(qa_limit));
    for (p, s) in v["phase"].as_array_mut().unwrap().iter_mut().zip(steps) {
        let t = p.as_table_mut().unwrap();
        t.insert("steps".into(), toml::Value::Integer(s));
        t.insert("warmup_steps".into(), toml::Value::Integer(s.min(10)));
        t.insert("eval_every".into(), toml::Value::Integer(every));
        t.insert("checkpoint_every".into(), toml::Value::Integer(every));
    }
    let path = dir.join("curriculum.toml");
    std::fs::write(&path, toml::to_string(&v).unwrap()).unwrap();
    path
}

/// The process's umask, read through the shell (setting it to read it would race with tests
/// running in parallel threads).
pub fn umask() -> u32 {
    let out = std::process::Command::new("sh")
        .args(["-c", "umask"])
        .output()
        .expect("sh -c umask");
    u32::from_str_radix(String::from_utf8_lossy(&out.stdout).trim(), 8).expect("an octal umask")
}

/// Every regular file under `dir` has the mode a newly created file gets (0666 less the
/// umask): none is left private like a temporary file. Returns how many files were checked.
#[cfg(unix)]
pub fn assert_normal_modes(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let want = 0o666 & !umask();
    let mut checked = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(
                    mode,
                    want,
                    "{} has mode {mode:o}, not {want:o}",
                    e.path().display()
                );
                checked += 1;
            }
        }
    }
    checked
}
