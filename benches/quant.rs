//! Quantize / dequantize throughput of the SoA block-32 formats, 1M elements each
//! (`cargo bench --bench quant`). Inputs are N(0, 1)-like deterministic values; throughput is
//! reported in elements per second.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use medregion::quant::{self, QuantType};

const N: usize = 1 << 20;

/// Deterministic, roughly normal values (sum of 4 uniforms), no allocation in the loop.
fn input() -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..N).map(|_| u() + u() + u() + u()).collect()
}

fn bench(c: &mut Criterion) {
    let x = input();
    let mut g = c.benchmark_group("quant");
    g.throughput(Throughput::Elements(N as u64));
    for t in QuantType::ALL {
        let mut q = quant::quantize(t, &x).unwrap();
        g.bench_with_input(BenchmarkId::new("quantize", t.name()), &x, |b, x| {
            b.iter(|| {
                quant::quantize_into(t, black_box(x), &mut q.values, &mut q.scales, &mut q.mins).unwrap()
            })
        });
        let mut out = vec![0.0f32; N];
        g.bench_with_input(BenchmarkId::new("dequantize", t.name()), &q, |b, q| {
            b.iter(|| quant::dequantize(t, black_box(&q.values), &q.scales, &q.mins, &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
