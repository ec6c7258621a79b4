//! Patient-specific attributes on a full-size synthetic chest label map: 512×512×400 at
//! 0.7×0.7×1.0 mm (105 M voxels, u16), four lung lobes (two ellipsoids split at mid-height), a
//! heart, and 100 spherical nodules of radius 2–9 mm scattered inside the lungs by a fixed
//! LCG (so ~100 components; a few may touch). Measures `attributes::compute` end to end: the
//! histogram + run scan, 26-connected labelling, hull diameters, lobe contacts and the text.
//! Target (attributes issue): under one second on one core. The compute is single-threaded.
//!
//! `cargo bench --bench attributes`

use criterion::{criterion_group, criterion_main, Criterion};
use medregion::attributes::{compute, LabelScheme};
use medregion::model::config::AttributeConfig;
use medregion::volume::Geometry;

const DIMS: [usize; 3] = [512, 512, 400];
const S: [f64; 3] = [0.7, 0.7, 1.0];

fn phantom() -> (Geometry, Vec<u16>) {
    let [nx, ny, nz] = DIMS;
    let affine =
        [[-S[0], 0.0, 0.0, 180.0], [0.0, -S[1], 0.0, 180.0], [0.0, 0.0, S[2], -200.0], [0.0, 0.0, 0.0, 1.0]];
    let geometry = Geometry::new(DIMS, affine, "bench").expect("geometry");
    let mut labels = vec![0u16; nx * ny * nz];
    // Lungs: ellipsoids centred at x = 110 mm (right, index x small) and 250 mm (left).
    let lungs = [(110.0, 12u16, 14u16), (250.0, 10u16, 11u16)];
    for z in 0..nz {
        let zm = z as f64 * S[2];
        for y in 0..ny {
            let ym = y as f64 * S[1];
            let row = &mut labels[nx * (y + ny * z)..][..nx];
            for (x, v) in row.iter_mut().enumerate() {
                let xm = x as f64 * S[0];
                for &(cx, upper, lower) in &lungs {
                    let d = ((xm - cx) / 60.0).powi(2)
                        + ((ym - 180.0) / 90.0).powi(2)
                        + ((zm - 200.0) / 150.0).powi(2);
                    if d <= 1.0 {
                        *v = if zm > 200.0 { upper } else { lower };
                    }
                }
                let h = ((xm - 180.0) / 45.0).powi(2)
                    + ((ym - 220.0) / 40.0).powi(2)
                    + ((zm - 120.0) / 50.0).powi(2);
                if h <= 1.0 {
                    *v = 51;
                }
            }
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |lo: f64, hi: f64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        lo + (hi - lo) * ((seed >> 11) as f64 / (1u64 << 53) as f64)
    };
    for i in 0..100 {
        let cx = if i % 2 == 0 { next(70.0, 150.0) } else { next(210.0, 290.0) };
        let (cy, cz, r) = (next(120.0, 240.0), next(90.0, 310.0), next(2.0, 9.0));
        let lo = |c: f64, s: f64, n: usize| (((c - r) / s).floor().max(0.0) as usize).min(n - 1);
        let hi = |c: f64, s: f64, n: usize| (((c + r) / s).ceil() as usize).min(n - 1);
        for z in lo(cz, S[2], nz)..=hi(cz, S[2], nz) {
            for y in lo(cy, S[1], ny)..=hi(cy, S[1], ny) {
                for x in lo(cx, S[0], nx)..=hi(cx, S[0], nx) {
                    let d = (x as f64 * S[0] - cx).powi(2)
                        + (y as f64 * S[1] - cy).powi(2)
                        + (z as f64 * S[2] - cz).powi(2);
                    if d <= r * r {
                        labels[x + nx * (y + ny * z)] = 118;
                    }
                }
            }
        }
    }
    (geometry, labels)
}

fn bench_attributes(c: &mut Criterion) {
    let (geometry, labels) = phantom();
    let scheme = LabelScheme::totalseg();
    let config = AttributeConfig::default();
    let doc = compute(&geometry, &geometry, &labels, &scheme, &config).expect("compute");
    let nodules = &doc.lesions[0];
    eprintln!("phantom: {} nodule components, {} kept\n{}", nodules.components, nodules.count, doc.text);
    let mut group = c.benchmark_group("attributes_512x512x400");
    group.sample_size(10);
    group.bench_function("compute_100_nodules", |b| {
        b.iter(|| compute(&geometry, &geometry, &labels, &scheme, &config).expect("compute").lesions.len())
    });
    group.finish();
}

criterion_group!(benches, bench_attributes);
criterion_main!(benches);
