//! [`bench_report`]: the matmul kernels measured against this machine's own limits, in one run
//! (DESIGN.md §8: targets are ratios measured side by side).
//!
//! * read bandwidth: a streaming sum over a 256 MiB buffer, 1 and 2 threads;
//! * f32 FMA peak: 12 independent AVX2 FMA chains per thread (the micro-kernels' ceiling);
//! * GEMV (`n = 1`) and batched decode (`n = 6`) on named model shapes for every weight type:
//!   effective GB/s = weight bytes / time, against the bandwidth; batch ratio = tokens/s of one
//!   6-row call over 6 one-row calls (`6 · t₁ / t₆`). Weights rotate through enough copies to
//!   exceed the last-level cache (as in a real model, where a layer's weights are cold);
//! * GEMM (`n = 512`, ViT-B shapes) in GFLOP/s against the FMA peak.
//!
//! Allocates freely (hundreds of MB); meant for `cargo bench --bench matmul` and the CLI.

use std::hint::black_box;
use std::time::{Duration, Instant};

use half::{bf16, f16};
use serde::Serialize;

use super::{matmul_into, Isa, MatmulScratch, ThreadPool};
use crate::quant::{self, QuantType, Quantized};
use crate::tensor::{Dense, QuantWeight, Weight, WeightType};
use crate::Result;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Thread counts to measure with (caller included).
    pub threads: Vec<usize>,
    /// Minimum measuring time per configuration.
    pub min_time: Duration,
    /// Weight bytes to rotate through per GEMV configuration (more than the last-level cache).
    pub cold_bytes: usize,
    /// Weight types for GEMV.
    pub gemv_types: Vec<WeightType>,
    /// Weight types for GEMM.
    pub gemm_types: Vec<WeightType>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            threads: vec![1, 2],
            min_time: Duration::from_millis(300),
            cold_bytes: 96 << 20,
            gemv_types: vec![
                WeightType::Q8_0,
                WeightType::Q4_0,
                WeightType::Q4_1,
                WeightType::F16,
                WeightType::Bf16,
                WeightType::F32,
            ],
            gemm_types: vec![WeightType::F32, WeightType::F16, WeightType::Bf16, WeightType::Q8_0],
        }
    }
}

/// A rate measured with a thread count.
#[derive(Clone, Debug, Serialize)]
pub struct Rate {
    pub threads: usize,
    pub value: f64,
}

/// GEMV and batch-6 decode on one weight.
#[derive(Clone, Debug, Serialize)]
pub struct GemvResult {
    /// Shape name, e.g. `"llama3.2-1b down 2048x8192"`.
    pub shape: String,
    pub rows: usize,
    pub cols: usize,
    pub weight_type: String,
    pub threads: usize,
    /// Weight bytes read per call.
    pub bytes: usize,
    /// Microseconds per `n = 1` call.
    pub t1_us: f64,
    /// Effective GB/s of the `n = 1` call.
    pub gbps: f64,
    /// `gbps` over the measured read bandwidth with the same thread count, in %.
    pub pct_bandwidth: f64,
    /// Microseconds per `n = 6` call.
    pub t6_us: f64,
    /// `6 · t1 / t6`: tokens/s of batched over sequential decode.
    pub batch_ratio: f64,
}

/// One GEMM.
#[derive(Clone, Debug, Serialize)]
pub struct GemmResult {
    pub n: usize,
    pub k: usize,
    pub rows: usize,
    pub weight_type: String,
    pub threads: usize,
    pub ms: f64,
    pub gflops: f64,
    /// `gflops` over the measured FMA peak with the same thread count, in %.
    pub pct_peak: f64,
}

/// Everything [`bench_report`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// CPU model and core count.
    pub machine: String,
    /// Kernel ISA used.
    pub isa: String,
    /// Streaming-sum read bandwidth, GB/s.
    pub bandwidth: Vec<Rate>,
    /// f32 FMA peak, GFLOP/s.
    pub fma_peak: Vec<Rate>,
    pub gemv: Vec<GemvResult>,
    pub gemm: Vec<GemmResult>,
}

/// GEMV shapes `[rows, cols]` with their names.
const GEMV_SHAPES: &[(&str, usize, usize)] = &[
    ("4096x4096 (llama-3-8b attn)", 4096, 4096),
    ("smollm2 up 1536x576", 1536, 576),
    ("smollm2 down 576x1536", 576, 1536),
    ("llama3.2-1b down 2048x8192", 2048, 8192),
];

/// GEMM shapes `(n, k, rows)`: ViT-B/14 token count ~512, d 768, MLP 3072.
const GEMM_SHAPES: &[(usize, usize, usize)] = &[(512, 768, 768), (512, 768, 3072)];

/// Runs the whole measurement (about a minute with the defaults).
pub fn bench_report(opts: &BenchOptions) -> Result<BenchReport> {
    let pools: Vec<ThreadPool> = opts.threads.iter().map(|&t| ThreadPool::new(t)).collect::<Result<_>>()?;
    let mut report = BenchReport {
        date: today_utc(),
        machine: machine(),
        isa: Isa::detect().name().to_string(),
        bandwidth: Vec::new(),
        fma_peak: Vec::new(),
        gemv: Vec::new(),
        gemm: Vec::new(),
    };
    let buffer: Vec<f32> = (0..(256usize << 20) / 4).map(|i| (i % 251) as f32 * 1e-3).collect();
    for pool in &pools {
        report.bandwidth.push(Rate { threads: pool.threads(), value: read_bandwidth(&buffer, pool)? });
        report.fma_peak.push(Rate { threads: pool.threads(), value: fma_peak(pool)? });
    }
    drop(buffer);
    for &(name, rows, cols) in GEMV_SHAPES {
        let src = random(rows * cols, 0x5EED ^ rows as u64);
        for &wt in &opts.gemv_types {
            let one = Owned::new(wt, &src)?;
            let copies: Vec<Owned> =
                (0..(opts.cold_bytes / one.bytes()).max(1)).map(|_| one.clone()).collect();
            let shape = [rows, cols];
            let views: Vec<Weight<'_>> = copies.iter().map(|o| o.view(&shape)).collect();
            for pool in &pools {
                let t1 = time_per_call(&views, 1, cols, rows, pool, opts.min_time)?;
                let t6 = time_per_call(&views, 6, cols, rows, pool, opts.min_time)?;
                let bytes = one.bytes();
                let gbps = bytes as f64 / t1 / 1e9;
                let bw = rate_for(&report.bandwidth, pool.threads());
                report.gemv.push(GemvResult {
                    shape: name.to_string(),
                    rows,
                    cols,
                    weight_type: wt.name().to_string(),
                    threads: pool.threads(),
                    bytes,
                    t1_us: t1 * 1e6,
                    gbps,
                    pct_bandwidth: 100.0 * gbps / bw,
                    t6_us: t6 * 1e6,
                    batch_ratio: 6.0 * t1 / t6,
                });
            }
        }
    }
    for &(n, k, rows) in GEMM_SHAPES {
        let src = random(rows * k, 0xFEED ^ rows as u64);
        for &wt in &opts.gemm_types {
            let one = Owned::new(wt, &src)?;
            let shape = [rows, k];
            let views = [one.view(&shape)];
            for pool in &pools {
                let t = time_per_call(&views, n, k, rows, pool, opts.min_time)?;
                let gflops = 2.0 * (n * k * rows) as f64 / t / 1e9;
                report.gemm.push(GemmResult {
                    n,
                    k,
                    rows,
                    weight_type: wt.name().to_string(),
                    threads: pool.threads(),
                    ms: t * 1e3,
                    gflops,
                    pct_peak: 100.0 * gflops / rate_for(&report.fma_peak, pool.threads()),
                });
            }
        }
    }
    Ok(report)
}

impl BenchReport {
    /// The report as Markdown tables.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("matmul kernels, {} on {}, isa {}\n\n", self.date, self.machine, self.isa);
        s += "| threads | read bandwidth (streaming sum, 256 MiB) | f32 FMA peak |\n|---|---|---|\n";
        for (b, p) in self.bandwidth.iter().zip(&self.fma_peak) {
            s += &format!("| {} | {:.1} GB/s | {:.1} GFLOP/s |\n", b.threads, b.value, p.value);
        }
        s += "\n| weight | type | MB | thr | n=1 µs | n=1 GB/s | % of bw | n=6 µs | batch-6 ratio |\n";
        s += "|---|---|---|---|---|---|---|---|---|\n";
        for g in &self.gemv {
            s += &format!(
                "| {} | {} | {:.2} | {} | {:.0} | {:.1} | {:.0} % | {:.0} | {:.2}× |\n",
                g.shape,
                g.weight_type,
                g.bytes as f64 / 1e6,
                g.threads,
                g.t1_us,
                g.gbps,
                g.pct_bandwidth,
                g.t6_us,
                g.batch_ratio
            );
        }
        s += "\n| GEMM n×k×rows | type | thr | ms | GFLOP/s | % of FMA peak |\n|---|---|---|---|---|---|\n";
        for g in &self.gemm {
            s += &format!(
                "| {}×{}×{} | {} | {} | {:.2} | {:.1} | {:.0} % |\n",
                g.n, g.k, g.rows, g.weight_type, g.threads, g.ms, g.gflops, g.pct_peak
            );
        }
        s
    }
}

/// Owned weight storage of one type, for building [`Weight`] views.
#[derive(Clone)]
enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Quant(Quantized),
}

impl Owned {
    fn new(wt: WeightType, src: &[f32]) -> Result<Owned> {
        Ok(match wt {
            WeightType::F32 => Owned::F32(src.to_vec()),
            WeightType::F16 => Owned::F16(src.iter().map(|&v| f16::from_f32(v)).collect()),
            WeightType::Bf16 => Owned::Bf16(src.iter().map(|&v| bf16::from_f32(v)).collect()),
            WeightType::Q8_0 => Owned::Quant(quant::quantize(QuantType::Q8_0, src)?),
            WeightType::Q4_0 => Owned::Quant(quant::quantize(QuantType::Q4_0, src)?),
            WeightType::Q4_1 => Owned::Quant(quant::quantize(QuantType::Q4_1, src)?),
        })
    }

    fn view<'a>(&'a self, shape: &'a [usize]) -> Weight<'a> {
        match self {
            Owned::F32(d) => Weight::F32(Dense { name: "bench", shape, data: d }),
            Owned::F16(d) => Weight::F16(Dense { name: "bench", shape, data: d }),
            Owned::Bf16(d) => Weight::BF16(Dense { name: "bench", shape, data: d }),
            Owned::Quant(q) => Weight::Quant(QuantWeight {
                name: "bench",
                qtype: q.qtype,
                shape,
                values: &q.values,
                scales: &q.scales,
                mins: &q.mins,
            }),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Owned::F32(d) => d.len() * 4,
            Owned::F16(d) => d.len() * 2,
            Owned::Bf16(d) => d.len() * 2,
            Owned::Quant(q) => q.values.len() + 2 * (q.scales.len() + q.mins.len()),
        }
    }
}

/// Seconds per call of `n` rows, rotating through `weights` (warmed once first).
fn time_per_call(
    weights: &[Weight<'_>],
    n: usize,
    k: usize,
    rows: usize,
    pool: &ThreadPool,
    min_time: Duration,
) -> Result<f64> {
    let x = random(n * k, 0xAC7 ^ n as u64);
    let mut out = vec![0.0f32; n * rows];
    let mut scratch = MatmulScratch::with_capacity(n, k)?;
    for w in weights {
        matmul_into(&x, n, w, &mut out, &mut scratch, pool)?;
    }
    let start = Instant::now();
    let mut calls = 0usize;
    while calls < weights.len() || start.elapsed() < min_time {
        matmul_into(black_box(&x), n, &weights[calls % weights.len()], &mut out, &mut scratch, pool)?;
        calls += 1;
    }
    black_box(&out);
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

/// The machine's read bandwidth in GB/s on `threads` threads (0 = one per core): a streaming
/// sum over `bytes` of memory (use several times the last-level cache), best of 5 passes. The
/// reference that `bench llm` and the GEMV benchmarks report their bandwidth against.
pub fn machine_read_bandwidth(bytes: usize, threads: usize) -> Result<f64> {
    let pool = ThreadPool::new(threads)?;
    let buffer = random(bytes / 4, 0xB1D);
    read_bandwidth(&buffer, &pool)
}

/// GB/s of a streaming sum over `buf` with `pool`, best of 5 passes.
fn read_bandwidth(buf: &[f32], pool: &ThreadPool) -> Result<f64> {
    const CHUNK: usize = 1 << 18; // 1 MiB of f32
    let chunks = buf.len().div_ceil(CHUNK);
    let sums: Vec<std::sync::atomic::AtomicU32> = (0..chunks).map(|_| Default::default()).collect();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        pool.run(chunks, &|c| {
            let part = &buf[c * CHUNK..((c + 1) * CHUNK).min(buf.len())];
            sums[c].store(stream_sum(part).to_bits(), std::sync::atomic::Ordering::Relaxed);
        })?;
        best = best.max(std::mem::size_of_val(buf) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    black_box(&sums);
    Ok(best)
}

fn stream_sum(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect().avx2() {
        // SAFETY: `Isa::detect` returns Avx2 only when the CPU has AVX2/FMA/F16C.
        return unsafe { avx2::stream_sum(v) };
    }
    let mut acc = [0.0f32; 8];
    for c in v.chunks(8) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum()
}

/// This machine's int8 multiply-accumulate peak on some threads: what the quantized products
/// with int8 activations could at most reach ([`machine_int8_peak`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Int8Peak {
    /// Multiply-accumulates per second, in billions (all threads together).
    pub gmacs: f64,
    /// The instruction measured: the one the quantized products' batched kernels use on this
    /// CPU (`vpdpbusd zmm`, `vpdpbusd ymm`, or `vpmaddubsw ymm` without VNNI).
    pub kernel: &'static str,
}

/// This machine's int8 multiply-accumulate peak in GMAC/s on `threads` threads (0 = one per
/// core): 12 independent chains of the batched products' dot-product instruction per thread
/// (`Isa::detect`'s: AVX512-VNNI `vpdpbusd` on 512-bit vectors, 64 products each; AVX-VNNI on
/// 256-bit, 32; AVX2 `vpmaddubsw`, 32), best of 3. `None` where
/// the products have no vector path (the scalar ISA). The ceiling against which `bench llm`
/// reports batched decode, which is bound by these instructions rather than by memory: a
/// product also spends instructions on unpacking weights and on each block's f32 scaling, so
/// real kernels reach a fraction of it.
pub fn machine_int8_peak(threads: usize) -> Result<Option<Int8Peak>> {
    const ITERS: usize = 4_000_000;
    #[cfg(target_arch = "x86_64")]
    {
        let isa = Isa::detect();
        let (kernel, macs): (&'static str, f64) = match isa {
            Isa::Avx512Vnni => ("vpdpbusd zmm", 64.0),
            Isa::Avx2Vnni => ("vpdpbusd ymm", 32.0),
            Isa::Avx2 => ("vpmaddubsw ymm", 32.0),
            Isa::Scalar => return Ok(None),
        };
        let pool = ThreadPool::new(threads)?;
        let mut best = 0.0f64;
        for _ in 0..3 {
            let start = Instant::now();
            pool.run(pool.threads(), &|_| {
                // SAFETY: `Isa::detect` returned this ISA only where the CPU has its features.
                black_box(unsafe { avx2::int8_chains(isa, black_box(ITERS)) });
            })?;
            let total = pool.threads() as f64 * ITERS as f64 * 12.0 * macs;
            best = best.max(total / start.elapsed().as_secs_f64() / 1e9);
        }
        Ok(Some(Int8Peak { gmacs: best, kernel }))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, ITERS);
        Ok(None)
    }
}

/// GFLOP/s of independent f32 FMA chains on every thread of `pool`, best of 3.
fn fma_peak(pool: &ThreadPool) -> Result<f64> {
    const ITERS: usize = 20_000_000;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        pool.run(pool.threads(), &|_| {
            black_box(fma_chains(black_box(ITERS)));
        })?;
        let flops = pool.threads() as f64 * ITERS as f64 * 12.0 * 16.0;
        best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

fn fma_chains(iters: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect().avx2() {
        // SAFETY: `Isa::detect` returns Avx2 only when the CPU has AVX2/FMA/F16C.
        return unsafe { avx2::fma_chains(iters) };
    }
    let mut acc = [[1.0f32; 8]; 12];
    for _ in 0..iters {
        for a in acc.iter_mut().flatten() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{black_box, Isa};
    use crate::ops::cpu::simd::avx2::hsum8;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn stream_sum(v: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let blocks = v.chunks_exact(32);
        let tail: f32 = blocks.remainder().iter().sum();
        for b in blocks {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `b` has 32 elements; this reads b[8j..8j + 8].
                *a = _mm256_add_ps(*a, unsafe { _mm256_loadu_ps(b.as_ptr().add(8 * j)) });
            }
        }
        hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail
    }

    /// 12 independent accumulator chains of `isa`'s int8 dot-product instruction, `iters`
    /// steps each (see `machine_int8_peak`); returns a sum so nothing is optimized away.
    ///
    /// # Safety
    /// The CPU has `isa`'s features (AVX2 for `Isa::Avx2`, plus VNNI for the others).
    pub(super) unsafe fn int8_chains(isa: Isa, iters: usize) -> i32 {
        // SAFETY: the caller's contract selects a function whose features the CPU has.
        unsafe {
            match isa {
                Isa::Avx512Vnni => chains_avx512vnni(iters),
                Isa::Avx2Vnni => chains_avxvnni(iters),
                _ => chains_avx2(iters),
            }
        }
    }

    /// Adds the 12 accumulators' 32-bit lanes (wrapping).
    #[target_feature(enable = "avx2")]
    fn lanes_sum(acc: &[__m256i; 12]) -> i32 {
        let mut lanes = [0i32; 8];
        let s = acc.iter().fold(_mm256_setzero_si256(), |s, v| _mm256_add_epi32(s, *v));
        // SAFETY: an 8-lane store into an 8-element array.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
        lanes.iter().fold(0i32, |a, &b| a.wrapping_add(b))
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    fn chains_avx512vnni(iters: usize) -> i32 {
        let (u, s) = (black_box(_mm512_set1_epi8(3)), black_box(_mm512_set1_epi8(-2)));
        let mut acc = [black_box(_mm512_set1_epi32(1)); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbusd_epi32(*a, u, s);
            }
        }
        let halves: [__m256i; 12] = std::array::from_fn(|j| {
            _mm256_add_epi32(_mm512_castsi512_si256(acc[j]), _mm512_extracti64x4_epi64::<1>(acc[j]))
        });
        lanes_sum(&halves)
    }

    #[target_feature(enable = "avx2,avxvnni")]
    fn chains_avxvnni(iters: usize) -> i32 {
        let (u, s) = (black_box(_mm256_set1_epi8(3)), black_box(_mm256_set1_epi8(-2)));
        let mut acc = [black_box(_mm256_set1_epi32(1)); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_dpbusd_avx_epi32(*a, u, s);
            }
        }
        lanes_sum(&acc)
    }

    #[target_feature(enable = "avx2")]
    fn chains_avx2(iters: usize) -> i32 {
        // Each `vpmaddubsw` takes the previous one's result as its signed operand (a
        // loop-invariant product would be hoisted): 12 chains keep its ports busy. The
        // kernels' `vpaddw` that sum the products go to another port.
        let u = black_box(_mm256_set1_epi8(3));
        let mut acc = [black_box(_mm256_set1_epi16(1)); 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_maddubs_epi16(u, *a);
            }
        }
        lanes_sum(&acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn fma_chains(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let s = acc.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
        hsum8(s)
    }
}

fn rate_for(rates: &[Rate], threads: usize) -> f64 {
    rates.iter().find(|r| r.threads == threads).map(|r| r.value).unwrap_or(f64::NAN)
}

/// Deterministic values in (−1, 1), never zero.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 + 0.5) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The CPU model from `/proc/cpuinfo` (Linux) and the number of cores.
fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{model}, {cores} cores")
}

/// Today's UTC date (civil-from-days, H. Hinnant's algorithm).
fn today_utc() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
