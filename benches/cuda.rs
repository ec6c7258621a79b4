//! CUDA benchmarks (`cargo bench --features cuda --bench cuda`; on the GPU machine
//! `scripts/gpu-check.sh` runs the prebuilt binary). Every figure is a ratio against a limit
//! measured in the same run on the same GPU (DESIGN.md §8):
//!
//! - memory-bound kernels (decode GEMV) against the device-to-device copy bandwidth
//!   (bytes read + written per second by `cuMemcpyDtoD` over 1 GiB);
//! - the encoder's GEMMs (cuBLAS, bf16 in, f32 accumulate) against cuBLAS's own best bf16
//!   TFLOP/s on large square GEMMs.
//!
//! Times are CUDA events around repeated launches after warm-up (`Gpu::time_ms`). Prints a
//! Markdown table (rows start with `|`), which gpu-check.sh copies into its summary. Without a
//! GPU it prints why and exits 0 (CI builds it; it never runs there).

#[cfg(feature = "cuda")]
mod bench {
    use std::sync::Arc;

    use medregion::backend::cuda::blas::{Blas, Half};
    use medregion::backend::cuda::Gpu;
    use medregion::Result;

    pub struct Row {
        pub name: String,
        pub ms: f64,
        pub value: f64,
        pub unit: &'static str,
        pub limit: f64,
    }

    pub fn print(rows: &[Row]) {
        println!("| benchmark | time (ms) | achieved | limit (same run) | fraction |");
        println!("|---|---:|---:|---:|---:|");
        for r in rows {
            println!(
                "| {} | {:.4} | {:.1} {} | {:.1} {} | {:.2} |",
                r.name,
                r.ms,
                r.value,
                r.unit,
                r.limit,
                r.unit,
                r.value / r.limit
            );
        }
    }

    fn gemm_tflops(gpu: &Arc<Gpu>, blas: &Blas, m: usize, n: usize, k: usize) -> Result<(f64, f64)> {
        // Non-zero inputs (1.0 in bf16 = 0x3f80): zeros can run faster on some parts.
        let ones: Vec<u16> = vec![0x3f80; m.max(n) * k];
        let (x, w) = (gpu.upload(&ones[..m * k])?, gpu.upload(&ones[..n * k])?);
        let mut out = gpu.alloc::<f32>(m * n)?;
        let ms = gpu.time_ms(3, 10, || blas.gemm_xwt(Half::Bf16, &x, &w, &mut out, m, n, k))?;
        Ok((ms, 2.0 * (m * n * k) as f64 / (ms * 1e-3) / 1e12))
    }

    pub fn run() -> Result<Vec<Row>> {
        let gpu = Gpu::open(0)?;
        eprintln!("{} (sm_{}{}, image {})", gpu.name(), gpu.capability().0, gpu.capability().1, gpu.image());
        let mut rows = Vec::new();

        let copy = gpu.copy_bandwidth_gbs(1 << 30)?;
        rows.push(Row {
            name: "device copy 1 GiB (read+write)".into(),
            ms: 0.0,
            value: copy,
            unit: "GB/s",
            limit: copy,
        });

        let blas = Blas::new(&gpu)?;
        let mut peak = 0.0f64;
        for s in [4096, 8192] {
            peak = peak.max(gemm_tflops(&gpu, &blas, s, s, s)?.1);
        }
        rows.push(Row {
            name: "cuBLAS bf16 peak (square 4096/8192)".into(),
            ms: 0.0,
            value: peak,
            unit: "TFLOP/s",
            limit: peak,
        });
        // RAD-DINO (ViT-B/14 at 518 px): 1370 tokens per slice, 32 slices per study.
        let tokens = 32 * 1370;
        for (name, n, k) in
            [("qkv", 2304, 768), ("attn out", 768, 768), ("mlp up", 3072, 768), ("mlp down", 768, 3072)]
        {
            let (ms, t) = gemm_tflops(&gpu, &blas, tokens, n, k)?;
            rows.push(Row {
                name: format!("encoder GEMM {name} {tokens}x{n}x{k}"),
                ms,
                value: t,
                unit: "TFLOP/s",
                limit: peak,
            });
        }
        rows.extend(super::gemv::run(&gpu, copy)?);
        Ok(rows)
    }
}

#[cfg(feature = "cuda")]
mod gemv {
    use std::sync::Arc;

    use medregion::backend::cuda::ops::matmul::{matmul, DeviceWeight, QuantizedActs};
    use medregion::backend::cuda::Gpu;
    use medregion::quant::{quantize, QuantType};
    use medregion::tensor::{QuantWeight, Weight};
    use medregion::Result;

    use super::bench::Row;

    /// Decode GEMVs at LLaMA-3-8B shapes (the full-size study): the weight is read once
    /// per call for all `n` sequences, so the effective bandwidth is weight bytes / time; the
    /// limit is the device copy bandwidth of the same run.
    pub fn run(gpu: &Arc<Gpu>, copy_gbs: f64) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        // (name, rows, k): attention q/o projections, the MLP's up (gate and up) and down.
        let shapes =
            [("q/o 4096x4096", 4096, 4096), ("up 14336x4096", 14336, 4096), ("down 4096x14336", 4096, 14336)];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for qtype in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1] {
            for &(name, r, k) in &shapes {
                let src: Vec<f32> = (0..r * k)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
                    })
                    .collect();
                let q = quantize(qtype, &src)?;
                let shape = [r, k];
                let w = Weight::Quant(QuantWeight {
                    name: "bench",
                    qtype,
                    shape: &shape,
                    values: &q.values,
                    scales: &q.scales,
                    mins: &q.mins,
                });
                let dw = DeviceWeight::upload(gpu, &w)?;
                let bytes = q.values.len() + 2 * q.scales.len() + 2 * q.mins.len();
                for n in [1usize, 6] {
                    let x = gpu.upload(&src[..n * k])?;
                    let mut acts = QuantizedActs::new(gpu, n, k)?;
                    let mut out = gpu.alloc::<f32>(n * r)?;
                    let ms = gpu.time_ms(5, 50, || {
                        matmul(gpu, &dw, &x.slice(..), n, &mut acts, &mut out.slice_mut(..))
                    })?;
                    rows.push(Row {
                        name: format!("GEMV {qtype} {name} batch {n}"),
                        ms,
                        value: bytes as f64 / (ms * 1e-3) / 1e9,
                        unit: "GB/s",
                        limit: copy_gbs,
                    });
                }
            }
        }
        Ok(rows)
    }
}

fn main() {
    #[cfg(feature = "cuda")]
    match bench::run() {
        Ok(rows) => bench::print(&rows),
        Err(e) => {
            println!("CUDA benchmarks not run: {e}");
        }
    }
    #[cfg(not(feature = "cuda"))]
    println!("CUDA benchmarks not run: built without --features cuda");
}
