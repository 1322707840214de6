//! What quantization cost, tensor by tensor: the per-layer error table of `badge export` and
//! `badge inspect --report`.

use serde::Serialize;

/// Error statistics of one quantized tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    pub name: String,
    pub shape: (usize, usize),
    pub group_size: usize,
    pub bytes: usize,
    pub max_abs_error: f64,
    pub rmse: f64,
    /// RMSE divided by the tensor's RMS.
    pub rel_rmse: f64,
    /// 20·log10(RMS / RMSE); infinite when exact.
    pub snr_db: f64,
    pub worst_group: usize,
    pub worst_group_max_error: f64,
}

impl TensorError {
    /// Compares `original` with its dequantized form `restored`.
    pub fn measure(
        name: &str,
        shape: (usize, usize),
        group_size: usize,
        bytes: usize,
        original: &[f32],
        restored: &[f32],
    ) -> Self {
        let (mut max_abs, mut se, mut ss) = (0.0f64, 0.0f64, 0.0f64);
        let (mut worst, mut worst_err) = (0usize, 0.0f64);
        for (g, (a, b)) in original
            .chunks(group_size)
            .zip(restored.chunks(group_size))
            .enumerate()
        {
            let mut group_max = 0.0f64;
            for (&x, &y) in a.iter().zip(b) {
                let e = f64::from(x - y).abs();
                group_max = group_max.max(e);
                se += e * e;
                ss += f64::from(x) * f64::from(x);
            }
            if group_max > worst_err {
                worst_err = group_max;
                worst = g;
            }
            max_abs = max_abs.max(group_max);
        }
        let n = original.len().max(1) as f64;
        let rmse = (se / n).sqrt();
        let rms = (ss / n).sqrt();
        TensorError {
            name: name.to_string(),
            shape,
            group_size,
            bytes,
            max_abs_error: max_abs,
            rmse,
            rel_rmse: if rms > 0.0 { rmse / rms } else { 0.0 },
            snr_db: if rmse > 0.0 {
                20.0 * (rms / rmse).log10()
            } else {
                f64::INFINITY
            },
            worst_group: worst,
            worst_group_max_error: worst_err,
        }
    }
}

/// Quantizes one matrix to Q8_0 and measures what that cost: `(int8 values, scales, error)`.
/// Both exporters (the blob and llama2.c's file) go through here.
pub fn quantize_measured(
    name: &str,
    shape: (usize, usize),
    values: &[f32],
    group_size: usize,
) -> (Vec<i8>, Vec<f32>, TensorError) {
    let mut q = vec![0i8; values.len()];
    let mut scales = vec![0f32; values.len() / group_size];
    badge_firmware::quant::quantize(values, group_size, &mut q, &mut scales);
    let mut restored = vec![0f32; values.len()];
    badge_firmware::quant::dequantize(&q, &scales, group_size, &mut restored);
    let error = TensorError::measure(
        name,
        shape,
        group_size,
        q.len() + scales.len() * 4,
        values,
        &restored,
    );
    (q, scales, error)
}

/// Every tensor's error and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct QuantReport {
    pub group_size: usize,
    pub tensors: Vec<TensorError>,
    pub total_bytes: usize,
    pub total_values: usize,
    /// RMSE over all quantized values together.
    pub overall_rmse: f64,
    pub worst_rel_rmse: f64,
    pub worst_tensor: String,
}

impl QuantReport {
    pub fn new(group_size: usize, tensors: Vec<TensorError>) -> Self {
        let total_values: usize = tensors.iter().map(|t| t.shape.0 * t.shape.1).sum();
        let se: f64 = tensors
            .iter()
            .map(|t| t.rmse * t.rmse * (t.shape.0 * t.shape.1) as f64)
            .sum();
        let worst = tensors
            .iter()
            .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse));
        QuantReport {
            group_size,
            total_bytes: tensors.iter().map(|t| t.bytes).sum(),
            total_values,
            overall_rmse: (se / total_values.max(1) as f64).sqrt(),
            worst_rel_rmse: worst.map_or(0.0, |t| t.rel_rmse),
            worst_tensor: worst.map_or(String::new(), |t| t.name.clone()),
            tensors,
        }
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<22} {:>11} {:>4} {:>9} {:>10} {:>10} {:>9} {:>7} {:>12}\n",
            "tensor",
            "shape",
            "GS",
            "bytes",
            "max|err|",
            "RMSE",
            "rel RMSE",
            "SNR dB",
            "worst group"
        );
        for t in &self.tensors {
            s += &format!(
                "{:<22} {:>11} {:>4} {:>9} {:>10.3e} {:>10.3e} {:>9.5} {:>7.2} {:>12}\n",
                t.name,
                format!("{}x{}", t.shape.0, t.shape.1),
                t.group_size,
                t.bytes,
                t.max_abs_error,
                t.rmse,
                t.rel_rmse,
                t.snr_db,
                format!("#{} {:.2e}", t.worst_group, t.worst_group_max_error)
            );
        }
        s += &format!(
            "total: {} values in {} bytes, overall RMSE {:.3e}, worst relative RMSE {:.5} ({})\n",
            self.total_values,
            self.total_bytes,
            self.overall_rmse,
            self.worst_rel_rmse,
            self.worst_tensor
        );
        s
    }

    pub fn csv(&self) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "tensor",
            "rows",
            "cols",
            "group_size",
            "bytes",
            "max_abs_error",
            "rmse",
            "rel_rmse",
            "snr_db",
            "worst_group",
            "worst_group_max_error",
        ])?;
        for t in &self.tensors {
            w.write_record([
                t.name.clone(),
                t.shape.0.to_string(),
                t.shape.1.to_string(),
                t.group_size.to_string(),
                t.bytes.to_string(),
                t.max_abs_error.to_string(),
                t.rmse.to_string(),
                t.rel_rmse.to_string(),
                t.snr_db.to_string(),
                t.worst_group.to_string(),
                t.worst_group_max_error.to_string(),
            ])?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}
