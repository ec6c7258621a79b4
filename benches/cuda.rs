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

    use medregion::backend::cuda::Gpu;
    use medregion::Result;

    /// Decode GEMV rows (filled in with the quantized matmul kernels).
    pub fn run(_gpu: &Arc<Gpu>, _copy_gbs: f64) -> Result<Vec<super::bench::Row>> {
        Ok(Vec::new())
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
