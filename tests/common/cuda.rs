//! Shared by the GPU parity tests (`tests/cuda_*.rs`): the device and the seeded generators.
//!
//! Include it with `#[path = "common/cuda.rs"] mod cuda_common;`.
#![allow(dead_code)] // each test crate uses a part

use std::sync::Arc;

use medregion::backend::cuda::Gpu;

/// CUDA device 0; these tests are `#[ignore]`d and run on a GPU machine by
/// `scripts/gpu-check.sh`.
pub fn gpu() -> Arc<Gpu> {
    Gpu::open(0).expect("CUDA device 0 (these tests run on a GPU machine via scripts/gpu-check.sh)")
}

/// xorshift64: seeded, reproducible (the vision tests' uniform inputs).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi), never exactly 0 for ranges that straddle it (24 random bits).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32)
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32(lo, hi)).collect()
    }
}

/// xorshift64* (no `rand` dev-dependency): the decoder tests' inputs.
pub struct XorShiftStar(u64);

impl XorShiftStar {
    pub fn new(seed: u64) -> XorShiftStar {
        XorShiftStar(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f64() as f32
    }
    /// Roughly normal (sum of 4 uniforms), never exactly 0 in practice.
    pub fn normal(&mut self, sigma: f32) -> f32 {
        let s: f64 = (0..4).map(|_| self.f64()).sum::<f64>() - 2.0;
        (s * 1.732 * sigma as f64) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }
    pub fn vec(&mut self, n: usize, sigma: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal(sigma)).collect()
    }
}
