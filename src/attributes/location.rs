//! Lesion locations: lobe of a nodule, side of an effusion or a cyst (rules in the module doc of
//! [`super`]).

use super::components::Runs;
use super::{Location, Measure};
use crate::volume::geometry::invert;

fn side_name(right: bool) -> String {
    if right { "right" } else { "left" }.to_string()
}

impl Measure<'_> {
    /// Lobe voxels among the 26 neighbours of each run (9 lines, x from x0 - 1 to x1), per
    /// lobe index.
    fn lobe_contacts(&self, runs: &Runs, run_ids: &[u32]) -> Vec<u64> {
        let [nx, ny, nz] = self.geometry.dims;
        let mut counts = vec![0u64; self.table.lobes.len()];
        for &i in run_ids {
            let r = runs.runs[i as usize];
            let (y, z) = (r.line as usize % ny, r.line as usize / ny);
            let (x0, x1) = ((r.x0 as usize).saturating_sub(1), (r.x1 as usize + 1).min(nx));
            for zz in z.saturating_sub(1)..(z + 2).min(nz) {
                for yy in y.saturating_sub(1)..(y + 2).min(ny) {
                    let row = &self.labels[nx * (yy + ny * zz)..][..nx];
                    for &l in &row[x0..x1] {
                        let lobe = self.lobe_of[l as usize];
                        if lobe > 0 {
                            counts[lobe as usize - 1] += 1;
                        }
                    }
                }
            }
        }
        counts
    }

    /// Index of the largest count (first on ties), if any is non-zero.
    fn argmax(counts: &[u64]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && best.is_none_or(|b| c > counts[b]) {
                best = Some(i);
            }
        }
        best
    }

    fn has_lobes(&self) -> bool {
        self.lobe_of.iter().any(|&l| l > 0)
    }

    fn lobe_location(&self, lobe: usize, method: &str, distance_mm: Option<f64>) -> Location {
        let l = &self.table.lobes[lobe];
        Location {
            lobe: Some(l.class.clone()),
            lobe_phrase: Some(l.phrase.clone()),
            side: self.lobe_right[lobe].map(side_name),
            method: method.into(),
            distance_mm,
        }
    }

    fn no_location(method: &str) -> Location {
        Location { lobe: None, lobe_phrase: None, side: None, method: method.into(), distance_mm: None }
    }

    pub(super) fn nodule_location(&self, runs: &Runs, run_ids: &[u32], centroid: [f64; 3]) -> Location {
        if !self.has_lobes() {
            return Self::no_location("not_assessed");
        }
        if let Some(lobe) = Self::argmax(&self.lobe_contacts(runs, run_ids)) {
            return self.lobe_location(lobe, "contact", None);
        }
        match self.nearest_lobe(centroid) {
            Some((lobe, d)) => self.lobe_location(lobe, "nearest", Some(d)),
            None => Self::no_location("none"),
        }
    }

    /// The lobe of the lobe voxel nearest to `centroid` (voxel index), within
    /// `nearest_lobe_max_mm`: scans the index box that holds that ball (half-widths from the
    /// rows of the inverse affine, so oblique and sheared grids are covered). Ties go to the
    /// first voxel in raster order.
    fn nearest_lobe(&self, centroid: [f64; 3]) -> Option<(usize, f64)> {
        let dims = self.geometry.dims;
        let [nx, ny, _] = dims;
        let radius = f64::from(self.config.nearest_lobe_max_mm);
        let inv = invert(&self.geometry.affine)?;
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for i in 0..3 {
            let reach = radius * (inv[i][0].powi(2) + inv[i][1].powi(2) + inv[i][2].powi(2)).sqrt();
            lo[i] = (centroid[i] - reach).floor().max(0.0) as usize;
            hi[i] = ((centroid[i] + reach).ceil().max(0.0) as usize).min(dims[i] - 1);
        }
        let c = self.to_ras(centroid);
        let a = &self.geometry.affine;
        let mut best: Option<(usize, f64)> = None;
        for z in lo[2]..=hi[2] {
            for y in lo[1]..=hi[1] {
                let row = &self.labels[nx * (y + ny * z)..][..nx];
                for (x, &label) in row.iter().enumerate().take(hi[0] + 1).skip(lo[0]) {
                    let lobe = self.lobe_of[label as usize];
                    if lobe == 0 {
                        continue;
                    }
                    let (xf, yf, zf) = (x as f64, y as f64, z as f64);
                    let mut d2 = 0.0;
                    for (r, cr) in c.iter().enumerate() {
                        let p = a[r][0] * xf + a[r][1] * yf + a[r][2] * zf + a[r][3];
                        d2 += (p - cr) * (p - cr);
                    }
                    if d2 <= radius * radius && best.is_none_or(|(_, b)| d2 < b) {
                        best = Some((lobe as usize - 1, d2));
                    }
                }
            }
        }
        best.map(|(lobe, d2)| (lobe, d2.sqrt()))
    }

    /// Right (`true`) when the centroid's RAS x is right of the centre of the field of view.
    fn centroid_is_right(&self, centroid: [f64; 3]) -> bool {
        let d = self.geometry.dims;
        let mid = self.to_ras([(d[0] - 1) as f64 / 2.0, (d[1] - 1) as f64 / 2.0, (d[2] - 1) as f64 / 2.0]);
        self.to_ras(centroid)[0] > mid[0]
    }

    pub(super) fn effusion_side(&self, runs: &Runs, run_ids: &[u32], centroid: [f64; 3]) -> Location {
        let counts = self.lobe_contacts(runs, run_ids);
        let (mut right, mut left) = (0u64, 0u64);
        for (i, &c) in counts.iter().enumerate() {
            match self.lobe_right[i] {
                Some(true) => right += c,
                Some(false) => left += c,
                None => {}
            }
        }
        if right != left {
            let mut l = Self::no_location("contact");
            l.side = Some(side_name(right > left));
            return l;
        }
        let mut l = Self::no_location("centroid");
        l.side = Some(side_name(self.centroid_is_right(centroid)));
        l
    }

    pub(super) fn cyst_side(&self, runs: &Runs, run_ids: &[u32], centroid: [f64; 3]) -> Location {
        let [nx, _, _] = self.geometry.dims;
        let (mut right, mut left) = (0u64, 0u64);
        let mut side_of = std::collections::HashMap::<u16, Option<bool>>::new();
        for &i in run_ids {
            let r = runs.runs[i as usize];
            let row = &self.labels[nx * r.line as usize..][..nx];
            for &label in &row[r.x0 as usize..r.x1 as usize] {
                let side = *side_of.entry(label).or_insert_with(|| {
                    let name =
                        self.table.table.iter().find(|e| e.id == u32::from(label)).map(|e| e.name.as_str());
                    match name {
                        Some(n) if n.ends_with("_right") => Some(true),
                        Some(n) if n.ends_with("_left") => Some(false),
                        _ => None,
                    }
                });
                match side {
                    Some(true) => right += 1,
                    Some(false) => left += 1,
                    None => {}
                }
            }
        }
        if right != left {
            let mut l = Self::no_location("class");
            l.side = Some(side_name(right > left));
            return l;
        }
        let mut l = Self::no_location("centroid");
        l.side = Some(side_name(self.centroid_is_right(centroid)));
        l
    }
}
