//! [`PackageBuilder`]: config + tokenizer + a [`WeightSource`] + a [`QuantPolicy`] → package.
//!
//! This is the API every importer uses (synthetic presets, Hugging Face, GGUF): the source
//! hands over each logical weight (canonical name, logical shape) in whatever form it has —
//! f32, f16, bf16, or already block-quantized (GGUF: passed through losslessly when the policy
//! asks for the same type) — and the builder converts it to the policy's type and streams it to
//! the file. One weight is in memory at a time.

use std::path::{Path, PathBuf};

use half::{bf16, f16, slice::HalfFloatSliceExt};

use super::policy::QuantPolicy;
use super::writer::{PackageWriter, TensorSpec};
use crate::model::config::{ModelConfig, TokenizerKind, BYTES_TOKENIZER_MAGIC};
use crate::model::names::{expected_tensors, quant_part, QuantPart, TensorRole, TOKENIZER};
use crate::quant::{self, QuantType, Quantized, QK};
use crate::tensor::{as_bytes, numel, shape_string, DType, WeightType};
use crate::{Error, Result};

/// One logical weight as a source provides it (row-major, logical shape).
#[derive(Clone, Debug, PartialEq)]
pub enum SourceTensor {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// Already block-quantized (e.g. from GGUF), over the whole tensor in row-major order.
    Quant(Quantized),
}

impl SourceTensor {
    /// Number of logical elements.
    pub fn len(&self) -> usize {
        match self {
            SourceTensor::F32(v) => v.len(),
            SourceTensor::F16(v) => v.len(),
            SourceTensor::BF16(v) => v.len(),
            SourceTensor::Quant(q) => q.n_elements(),
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (dequantized if needed).
    pub fn into_f32(self) -> Result<Vec<f32>> {
        Ok(match self {
            SourceTensor::F32(v) => v,
            SourceTensor::F16(v) => {
                let mut out = vec![0.0; v.len()];
                v.convert_to_f32_slice(&mut out);
                out
            }
            SourceTensor::BF16(v) => {
                let mut out = vec![0.0; v.len()];
                v.convert_to_f32_slice(&mut out);
                out
            }
            SourceTensor::Quant(q) => q.dequantize()?,
        })
    }
}

/// Where the weights come from. Called once per logical weight, in package order.
pub trait WeightSource {
    /// The weight `name` (canonical, e.g. `llm.layers.0.self_attn.q_proj.weight`) with the
    /// logical `shape` the config implies. Return [`Error::NotFound`] if the source lacks it.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor>;
}

/// What [`PackageBuilder::write`] produced.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub path: PathBuf,
    pub file_len: u64,
    pub checksum: String,
    /// Logical elements of all weights.
    pub n_params: u64,
    /// Each weight and the type it was stored in, in package order.
    pub weights: Vec<(String, WeightType)>,
}

/// Builds a model package.
#[derive(Clone, Debug)]
pub struct PackageBuilder {
    config: ModelConfig,
    tokenizer: Vec<u8>,
    policy: QuantPolicy,
    threads: usize,
}

impl PackageBuilder {
    /// A builder for `config` with the tokenizer bytes (whose format is
    /// `config.tokenizer.kind`), the default policy (f16, default keep-f32 list) and all cores.
    pub fn new(config: ModelConfig, tokenizer: Vec<u8>) -> PackageBuilder {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        PackageBuilder { config, tokenizer, policy: QuantPolicy::default(), threads }
    }

    /// Sets the quantization policy.
    pub fn policy(mut self, policy: QuantPolicy) -> PackageBuilder {
        self.policy = policy;
        self
    }

    /// Threads used to quantize (at least 1).
    pub fn threads(mut self, n: usize) -> PackageBuilder {
        self.threads = n.max(1);
        self
    }

    /// The config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Each weight with its logical shape and the type it will be stored in, in package order.
    pub fn plan(&self) -> Result<Vec<(String, Vec<usize>, WeightType)>> {
        self.config.validate()?;
        expected_tensors(&self.config)
            .into_iter()
            .filter(|t| t.role == TensorRole::Weight)
            .map(|t| {
                let ty = self.policy.resolve(&t.name, &t.shape)?;
                Ok((t.name, t.shape, ty))
            })
            .collect()
    }

    /// The stored tensors of the plan, in file order (fillers excluded).
    fn stored_tensors(&self, plan: &[(String, Vec<usize>, WeightType)]) -> Vec<TensorSpec> {
        let mut specs = Vec::with_capacity(plan.len() + 1);
        for (name, shape, ty) in plan {
            match ty.quant() {
                None => {
                    specs.push(TensorSpec::new(name.clone(), ty.float_dtype().unwrap_or(DType::F32), shape))
                }
                Some(q) => {
                    let (rows, cols) = (shape[0], shape[1]);
                    let values = [rows, cols / QK * q.value_bytes_per_block()];
                    let blocks = [rows, cols / QK];
                    specs.push(TensorSpec::new(quant_part(name, q, QuantPart::Values), DType::U8, &values));
                    specs.push(TensorSpec::new(quant_part(name, q, QuantPart::Scales), DType::F16, &blocks));
                    if q.has_mins() {
                        specs.push(TensorSpec::new(
                            quant_part(name, q, QuantPart::Mins),
                            DType::F16,
                            &blocks,
                        ));
                    }
                }
            }
        }
        specs.push(TensorSpec::new(TOKENIZER, DType::U8, &[self.tokenizer.len()]));
        specs
    }

    /// Writes the package to `path` (atomically: a temporary file renamed into place).
    pub fn write(&self, path: &Path, source: &mut dyn WeightSource) -> Result<BuildReport> {
        self.write_with_progress(path, source, &mut |_, _, _| {})
    }

    /// Like [`write`](Self::write), calling `progress(done, total, name)` before each weight.
    pub fn write_with_progress(
        &self,
        path: &Path,
        source: &mut dyn WeightSource,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<BuildReport> {
        self.check_tokenizer()?;
        let plan = self.plan()?;
        let mut writer = PackageWriter::create(path, &self.config, &self.stored_tensors(&plan))?;
        let mut n_params = 0u64;
        for (i, (name, shape, ty)) in plan.iter().enumerate() {
            progress(i, plan.len(), name);
            let n = numel(shape).unwrap_or(0);
            let src = source.tensor(name, shape)?;
            if src.len() != n {
                return Err(Error::Shape {
                    what: format!("source tensor `{name}`"),
                    expected: format!("{n} values ({})", shape_string(shape)),
                    found: format!("{} values", src.len()),
                });
            }
            write_weight(&mut writer, name, *ty, src, self.threads)?;
            n_params += n as u64;
        }
        progress(plan.len(), plan.len(), TOKENIZER);
        writer.write(TOKENIZER, &self.tokenizer)?;
        let file_len = writer.file_len();
        let checksum = writer.finish()?;
        Ok(BuildReport {
            path: path.to_path_buf(),
            file_len,
            checksum,
            n_params,
            weights: plan.into_iter().map(|(n, _, t)| (n, t)).collect(),
        })
    }

    fn check_tokenizer(&self) -> Result<()> {
        if self.tokenizer.is_empty() {
            return Err(Error::invalid("tokenizer", "the tokenizer bytes are empty"));
        }
        if self.config.tokenizer.kind == TokenizerKind::Bytes && self.tokenizer != BYTES_TOKENIZER_MAGIC {
            return Err(Error::invalid(
                "tokenizer",
                "a `bytes` tokenizer must hold exactly the bytes of BYTES_TOKENIZER_MAGIC",
            ));
        }
        Ok(())
    }
}

/// Converts `src` to `ty` and writes its stored tensor(s).
fn write_weight(
    w: &mut PackageWriter,
    name: &str,
    ty: WeightType,
    src: SourceTensor,
    threads: usize,
) -> Result<()> {
    match ty.quant() {
        None => write_float(w, name, ty, src),
        Some(q) => {
            let quantized = match src {
                SourceTensor::Quant(qz) if qz.qtype == q => {
                    qz.validate()?;
                    qz
                }
                other => quantize_parallel(q, &other.into_f32()?, threads)?,
            };
            w.write(&quant_part(name, q, QuantPart::Values), &quantized.values)?;
            w.write(&quant_part(name, q, QuantPart::Scales), as_bytes(&quantized.scales))?;
            if q.has_mins() {
                w.write(&quant_part(name, q, QuantPart::Mins), as_bytes(&quantized.mins))?;
            }
            Ok(())
        }
    }
}

fn write_float(w: &mut PackageWriter, name: &str, ty: WeightType, src: SourceTensor) -> Result<()> {
    match (ty, src) {
        (WeightType::F32, SourceTensor::F32(v)) => w.write(name, as_bytes(&v)),
        (WeightType::F16, SourceTensor::F16(v)) => w.write(name, as_bytes(&v)),
        (WeightType::Bf16, SourceTensor::BF16(v)) => w.write(name, as_bytes(&v)),
        (ty, src) => {
            let values = src.into_f32()?;
            const CHUNK: usize = 1 << 18;
            match ty {
                WeightType::F32 => w.write(name, as_bytes(&values)),
                WeightType::F16 => {
                    let mut buf = vec![f16::ZERO; CHUNK.min(values.len())];
                    for chunk in values.chunks(CHUNK) {
                        let out = &mut buf[..chunk.len()];
                        out.convert_from_f32_slice(chunk);
                        w.write(name, as_bytes(out))?;
                    }
                    Ok(())
                }
                WeightType::Bf16 => {
                    let mut buf = vec![bf16::ZERO; CHUNK.min(values.len())];
                    for chunk in values.chunks(CHUNK) {
                        let out = &mut buf[..chunk.len()];
                        out.convert_from_f32_slice(chunk);
                        w.write(name, as_bytes(out))?;
                    }
                    Ok(())
                }
                _ => Err(Error::Internal(format!("{ty} is not a float type"))),
            }
        }
    }
}

/// [`quant::quantize`] split across threads at block boundaries (identical result).
pub(crate) fn quantize_parallel(qtype: QuantType, src: &[f32], threads: usize) -> Result<Quantized> {
    let n_blocks = src.len() / QK;
    if !src.len().is_multiple_of(QK) || threads <= 1 || n_blocks < 4096 {
        return quant::quantize(qtype, src);
    }
    let vb = qtype.value_bytes_per_block();
    let mut q = Quantized {
        qtype,
        values: vec![0; n_blocks * vb],
        scales: vec![f16::ZERO; n_blocks],
        mins: vec![f16::ZERO; if qtype.has_mins() { n_blocks } else { 0 }],
    };
    let per = n_blocks.div_ceil(threads);
    let has_mins = qtype.has_mins();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        let mut mins_chunks: Vec<&mut [f16]> =
            if has_mins { q.mins.chunks_mut(per).collect() } else { Vec::new() };
        for (i, (values, scales)) in q.values.chunks_mut(per * vb).zip(q.scales.chunks_mut(per)).enumerate() {
            let mins: &mut [f16] = if has_mins { std::mem::take(&mut mins_chunks[i]) } else { &mut [] };
            let part = &src[i * per * QK..i * per * QK + scales.len() * QK];
            handles.push(scope.spawn(move || quant::quantize_into(qtype, part, values, scales, mins)));
        }
        for h in handles {
            h.join().map_err(|_| Error::Internal("a quantization thread panicked".into()))??;
        }
        Ok(())
    })?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_quantization_matches_serial() {
        let src: Vec<f32> = (0..32 * 10_000).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        for q in QuantType::ALL {
            assert_eq!(quantize_parallel(q, &src, 3).unwrap(), quant::quantize(q, &src).unwrap());
        }
    }
}
