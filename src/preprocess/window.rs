//! Intensity normalisation to [0, 1] as a window `[lo, hi]`: `(clamp(x, lo, hi) − lo) / (hi − lo)`.
//!
//! * `hu_window` (default, SPEC §2, INFERRED): the configured `[hu_min, hu_max]`, by default
//!   [−1000, 1000] HU, i.e. `(x + 1000) / 2000` clipped to [0, 1].
//! * `amos_adaptive` (the authors' AMOS-MM `normalize`, SPEC §2, CONFIRMED): clip to the
//!   foreground percentiles `[P_lo, P_hi]` (foreground: voxels above the volume's mean), z-score,
//!   then min-max over the volume. Z-scoring is affine and the clipped volume's min and max are
//!   exactly `P_lo` and `P_hi` (background lies below the mean, so below `P_lo`), hence the
//!   result is the window `[P_lo, P_hi]`; that is how it is computed here, on the whole stored
//!   volume before cropping, as AMOS does. Percentiles use numpy's default ("linear").
//!
//! A degenerate window (`hi <= lo`, a constant volume) maps everything to 0, as AMOS's
//! `max(·, 1e-8)` guard does.

use serde::Serialize;

/// An HU window mapped to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Window {
    pub lo: f32,
    pub hi: f32,
}

impl Window {
    /// `(clamp(x, lo, hi) − lo) / (hi − lo)`; 0 when the window is empty.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        self.mapper().apply(x)
    }

    /// The same map with the division hoisted out (what per-voxel loops use).
    pub(crate) fn mapper(self) -> WindowMap {
        if self.hi > self.lo {
            WindowMap { lo: self.lo, hi: self.hi, scale: 1.0 / (self.hi - self.lo) }
        } else {
            WindowMap { lo: self.lo, hi: self.lo, scale: 0.0 }
        }
    }
}

/// `(min(max(x, lo), hi) − lo) · scale`: a [`Window`] ready for inner loops (branch-free, so it
/// vectorises; `scale` is 0 for an empty window). Within 1 ulp of the division.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowMap {
    lo: f32,
    hi: f32,
    scale: f32,
}

impl WindowMap {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        (x.max(self.lo).min(self.hi) - self.lo) * self.scale
    }
}

/// The AMOS-MM adaptive window of a volume: foreground `x > mean(all)`, bounds the foreground's
/// `lower_pct` and `upper_pct` percentiles (0..=100, numpy "linear").
pub fn amos_window(data: &[f32], lower_pct: f32, upper_pct: f32) -> Window {
    let mean = data.iter().map(|&v| f64::from(v)).sum::<f64>() / data.len().max(1) as f64;
    let mut fg: Vec<f32> = data.iter().copied().filter(|&v| f64::from(v) > mean).collect();
    if fg.is_empty() {
        return Window { lo: mean as f32, hi: mean as f32 };
    }
    let lo = percentile(&mut fg, f64::from(lower_pct));
    let hi = percentile(&mut fg, f64::from(upper_pct));
    Window { lo: lo as f32, hi: hi as f32 }
}

/// numpy `percentile(values, p)` with the default linear method (including its `_lerp`).
/// Reorders `values`.
pub fn percentile(values: &mut [f32], p: f64) -> f64 {
    let n = values.len();
    let idx = (p / 100.0) * (n - 1) as f64;
    let lo = (idx.floor() as usize).min(n - 1);
    let t = idx - lo as f64;
    let (_, a, right) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let a = f64::from(*a);
    let b = right.iter().copied().reduce(f32::min).map_or(a, f64::from);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_maps_to_unit_range() {
        let w = Window { lo: -1000.0, hi: 1000.0 };
        assert_eq!(w.apply(-3024.0), 0.0);
        assert_eq!(w.apply(0.0), 0.5);
        assert_eq!(w.apply(3000.0), 1.0);
        assert_eq!(Window { lo: 5.0, hi: 5.0 }.apply(7.0), 0.0);
    }

    #[test]
    fn percentile_matches_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [0.05, 25, 99.95]) = [1.002, 2.0, 9.988]
        let mut v = vec![10.0, 3.0, 1.0, 4.0, 2.0];
        assert!((percentile(&mut v, 0.05) - 1.002).abs() < 1e-12);
        assert!((percentile(&mut v, 25.0) - 2.0).abs() < 1e-12);
        assert!((percentile(&mut v, 99.95) - 9.988).abs() < 1e-12);
    }
}
