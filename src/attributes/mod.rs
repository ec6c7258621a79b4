//! Patient-specific attributes: deterministic measurements from a label map (SPEC-model.md §7,
//! DESIGN §2), as a versioned JSON document ([`schema`]) and the prompt text block ([`text`]).
//! Works with no model loaded: the settings are an [`AttributeConfig`] (`ModelConfig::default()`
//! has a usable one) and the classes a [`LabelConfig`].
//!
//! Choices made here (where the issue and the SPEC are silent, or disagree):
//! * **Grid.** Everything is measured on the label map's own grid, which must be the CT's
//!   (same check and message as the preprocessing masks: dims exactly, spacing, directions and
//!   origin within 1e-3 mm / 1e-4). RadGPT's 1 mm resampling is not done: counts and volumes
//!   are exact on the original voxels and diameters honour the anisotropic spacing.
//! * **Volumes** are voxel count × |det(affine)| (the voxel volume, also right for sheared
//!   grids), reported in mL. An organ is `not_assessed` when none of its classes is in the label
//!   table or when no voxel carries them (a missing mask is never a volume of 0).
//! * **Lesions** of one kind are the 26-connected (config) components of the union of the
//!   kind's classes ([`components`]); kinds never merge with each other. Components below
//!   `min_lesion_volume_mm3` are dropped and counted (so are 10⁵ single voxels: linear time).
//!   A lesion kind is `not_assessed` when none of its classes is in the table; otherwise zero
//!   lesions is "none detected".
//! * **Axial** means perpendicular to the patient's S-I axis: the voxel axis whose direction
//!   (from the affine, not the storage order) is closest to S-I is the slice axis. For an oblique
//!   or gantry-tilted grid the slices are the acquisition planes, measured in their own plane
//!   with the true in-plane metric; the tilt is reported (`grid.axial_tilt_deg`), nothing is
//!   resampled.
//! * **Diameters**: see [`diameter`] (hull of the voxel-edge midpoints, i.e. of the 0.5
//!   iso-contour; never all voxel pairs).
//! * **Centroid**: mean voxel index, and its RAS+ position by the affine.
//! * **Nodule location.** In a merged label map a nodule's voxels carry the nodule label, so
//!   they never overlap a lobe; "largest overlap" is read as *largest contact*: over the
//!   lesion's runs, the lobe voxels among the 26 neighbours are counted (a lobe voxel next to
//!   two runs counts twice; ties go to the lobe listed first in `labels.lobes`). No contact:
//!   the lobe voxel nearest to the centroid within `nearest_lobe_max_mm` (searched in the box of
//!   that radius: bounded work per lesion); none: "outside the lungs".
//! * **Sides.** Effusions: the side (by `labels.organs` `lung_right`/`lung_left`) of the lobes
//!   they touch most, else the centroid's RAS x against the centre of the field of view (+x is
//!   the patient's right). Cysts: the majority of their voxels' class names (`*_right`,
//!   `*_left`), else the centroid.
//! * **Category.** Nodules: "mass" above `mass_diameter_mm` (longest diameter), else the
//!   Fleischner bin of `fleischner_diameter` (default the mean of long and perpendicular axes;
//!   bins `< 6`, `6-8` (both ends included), `> 8` mm). Effusions: a grade per side by volume.
//! * **Order.** Nodules and cysts are sorted by longest diameter (their size in a report, so
//!   "largest" in the text is the longest), then volume; effusions by volume, then diameter;
//!   then raster order of the first voxel: the output is a pure function of the input.
//! * **Bad input** (stated behaviour, tested in `tests/attributes.rs`): another geometry →
//!   [`Error::Shape`] naming both; zero/negative spacing or a non-invertible affine →
//!   [`Error::InvalidArgument`] (readers already refuse them); non-integer or negative labels →
//!   refused by [`labels_from_volume`]; a single voxel measures its larger in-plane spacing; a
//!   lesion on the volume border is measured and flagged `touches_border`.

pub(crate) mod components;
pub(crate) mod diameter;
mod location;
pub mod schema;
pub mod text;

pub use schema::*;

/// Label schemes live with the masks input; re-exported here for existing callers.
pub use crate::masks::LabelScheme;

use crate::error::{Error, Result};
use crate::model::config::{AttributeConfig, FleischnerDiameter, LabelConfig};
use crate::preprocess::labels_from_volume;
use crate::volume::geometry::{check_affine, Geometry};
use crate::volume::Volume;
use components::{group, label, scan};
use diameter::{longest_axial, HullScratch, PlaneMetric, Segment};

/// A lesion kind (the value of the run kind byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Nodule = 1,
    Effusion = 2,
    Cyst = 3,
}

impl Kind {
    pub(crate) fn from_u8(v: u8) -> Kind {
        match v {
            1 => Kind::Nodule,
            2 => Kind::Effusion,
            _ => Kind::Cyst,
        }
    }

    const ALL: [Kind; 3] = [Kind::Nodule, Kind::Effusion, Kind::Cyst];

    /// The `labels.slots` key of the kind's classes.
    fn key(self) -> &'static str {
        match self {
            Kind::Nodule => "lung_nodule",
            Kind::Effusion => "pleural_effusion",
            Kind::Cyst => "kidney_cyst",
        }
    }
}

/// Measures a CT's label map (a volume of integral, non-negative values on the CT's grid).
pub fn compute_volumes(
    ct: &Volume,
    label_map: &Volume,
    scheme: &LabelScheme,
    config: &AttributeConfig,
) -> Result<Attributes> {
    ct.geometry().check_same_grid(label_map.geometry(), "label map")?;
    let labels = labels_from_volume(label_map)?;
    compute(ct.geometry(), label_map.geometry(), &labels, scheme, config)
}

/// Measures `labels` (`labels[x + nx·(y + ny·z)]`, on `geometry`, which must be `ct`'s grid).
pub fn compute(
    ct: &Geometry,
    geometry: &Geometry,
    labels: &[u16],
    scheme: &LabelScheme,
    config: &AttributeConfig,
) -> Result<Attributes> {
    config.validate()?;
    check_affine(&geometry.affine).map_err(|reason| Error::invalid("label map affine", reason))?;
    ct.check_same_grid(geometry, "label map")?;
    if labels.len() != geometry.voxel_count() {
        return Err(Error::Shape {
            what: "label map data length".into(),
            expected: format!("{} voxels (dims {:?})", geometry.voxel_count(), geometry.dims),
            found: labels.len().to_string(),
        });
    }
    let grid = Measure::new(geometry, labels, &scheme.labels, config);
    let mut doc = grid.run(&scheme.name);
    doc.text = text::render(&doc, config);
    Ok(doc)
}

/// Class ids of a group's classes present in the table, and their names.
fn class_ids(table: &LabelConfig, classes: &[String]) -> (Vec<u16>, Vec<String>) {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for c in classes {
        if let Some(id) = table.id_of(c) {
            if let Ok(id) = u16::try_from(id) {
                ids.push(id);
                names.push(c.clone());
            }
        }
    }
    (ids, names)
}

/// Everything one measurement needs.
pub(crate) struct Measure<'a> {
    pub geometry: &'a Geometry,
    pub labels: &'a [u16],
    pub table: &'a LabelConfig,
    pub config: &'a AttributeConfig,
    pub voxel_mm3: f64,
    pub axial_axis: usize,
    /// In-plane axes: `a` (along the segments) and `r` (rows).
    pub plane: [usize; 2],
    /// `lobe_of[label]`: 1 + index into `table.lobes`, 0 = not a lobe.
    pub lobe_of: Vec<u8>,
    /// Side of each lobe (`Some(true)` = right).
    pub lobe_right: Vec<Option<bool>>,
}

fn det3(a: &crate::volume::Affine) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

impl<'a> Measure<'a> {
    fn new(
        geometry: &'a Geometry,
        labels: &'a [u16],
        table: &'a LabelConfig,
        config: &'a AttributeConfig,
    ) -> Self {
        let dir = geometry.direction();
        let axial_axis =
            (0..3).max_by(|&a, &b| dir[a][2].abs().total_cmp(&dir[b][2].abs()).then(b.cmp(&a))).unwrap_or(2);
        let plane = match axial_axis {
            0 => [1, 2],
            1 => [0, 2],
            _ => [0, 1],
        };
        let mut lobe_of = vec![0u8; 65536];
        let side_of = |class: &str| {
            let in_group =
                |key: &str| table.organs.iter().any(|g| g.key == key && g.classes.iter().any(|c| c == class));
            if in_group("lung_right") {
                Some(true)
            } else if in_group("lung_left") {
                Some(false)
            } else {
                None
            }
        };
        let mut lobe_right = Vec::new();
        for (i, lobe) in table.lobes.iter().enumerate().take(255) {
            if let Some(id) = table.id_of(&lobe.class).and_then(|id| u16::try_from(id).ok()) {
                if lobe_of[id as usize] == 0 {
                    lobe_of[id as usize] = i as u8 + 1;
                }
            }
            lobe_right.push(side_of(&lobe.class));
        }
        Measure {
            geometry,
            labels,
            table,
            config,
            voxel_mm3: det3(&geometry.affine).abs(),
            axial_axis,
            plane,
            lobe_of,
            lobe_right,
        }
    }

    fn grid(&self) -> Grid {
        let dir = self.geometry.direction();
        Grid {
            dims: self.geometry.dims,
            spacing_mm: self.geometry.spacing(),
            voxel_volume_mm3: self.voxel_mm3,
            orientation: self.geometry.orientation_code(),
            axial_axis: self.axial_axis,
            axial_tilt_deg: dir[self.axial_axis][2].abs().min(1.0).acos().to_degrees(),
        }
    }

    fn settings(&self) -> Settings {
        let c = self.config;
        Settings {
            connectivity: c.connectivity,
            min_lesion_volume_mm3: f64::from(c.min_lesion_volume_mm3),
            denoise_erosion: c.denoise_erosion,
            mass_diameter_mm: f64::from(c.mass_diameter_mm),
            fleischner_bins_mm: c.fleischner_bins_mm.iter().map(|&v| f64::from(v)).collect(),
            fleischner_diameter: match c.fleischner_diameter {
                FleischnerDiameter::Mean => "mean".into(),
                FleischnerDiameter::Longest => "longest".into(),
            },
            nearest_lobe_max_mm: f64::from(c.nearest_lobe_max_mm),
            diameter_points: "voxel-edge-midpoints-hull".into(),
        }
    }

    /// Voxel index → RAS+ mm.
    pub(crate) fn to_ras(&self, p: [f64; 3]) -> [f64; 3] {
        let a = &self.geometry.affine;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3];
        }
        out
    }

    fn organs(&self, histogram: &[u64]) -> Vec<OrganVolume> {
        let mut groups: Vec<(String, Vec<String>)> =
            self.table.organs.iter().map(|g| (g.key.clone(), g.classes.clone())).collect();
        for lobe in &self.table.lobes {
            groups.push((lobe.class.clone(), vec![lobe.class.clone()]));
        }
        groups
            .into_iter()
            .map(|(key, classes)| {
                let (ids, names) = class_ids(self.table, &classes);
                let voxels: u64 = ids.iter().map(|&id| histogram[id as usize]).sum();
                let reason = if ids.is_empty() {
                    Some(format!("no class of `{key}` ({}) is in the label table", classes.join(", ")))
                } else if voxels == 0 {
                    Some(format!("no voxel is labelled {}", names.join(" or ")))
                } else {
                    None
                };
                let measured = reason.is_none();
                OrganVolume {
                    key,
                    status: if measured { Status::Measured } else { Status::NotAssessed },
                    reason,
                    classes: names,
                    voxels: measured.then_some(voxels),
                    volume_ml: measured.then(|| voxels as f64 * self.voxel_mm3 / 1000.0),
                }
            })
            .collect()
    }

    fn run(&self, table_name: &str) -> Attributes {
        let dims = self.geometry.dims;
        let mut kind_of = Box::new([0u8; 65536]);
        let mut kind_classes: Vec<(Vec<u16>, Vec<String>)> = Vec::new();
        for kind in Kind::ALL {
            let classes = self
                .table
                .slots
                .iter()
                .find(|g| g.key == kind.key())
                .map(|g| g.classes.clone())
                .unwrap_or_default();
            let (ids, names) = class_ids(self.table, &classes);
            for &id in &ids {
                if kind_of[id as usize] == 0 {
                    kind_of[id as usize] = kind as u8;
                }
            }
            kind_classes.push((ids, names));
        }
        let (runs, histogram) = scan(self.labels, dims, &kind_of);
        let (component, n_components) = label(&runs, dims, self.config.connectivity);
        let (order, start) = group(&component, n_components);

        let mut findings: Vec<LesionFinding> = Kind::ALL
            .iter()
            .zip(&kind_classes)
            .map(|(kind, (ids, names))| LesionFinding {
                kind: kind.key().to_string(),
                status: if ids.is_empty() { Status::NotAssessed } else { Status::Measured },
                reason: ids.is_empty().then(|| format!("no `{}` class is in the label table", kind.key())),
                classes: names.clone(),
                count: 0,
                components: 0,
                dropped_below_min_volume: 0,
                dropped_by_erosion: 0,
                sides: Vec::new(),
                lesions: Vec::new(),
            })
            .collect();
        let mut keyed: [Vec<(Lesion, usize)>; 3] = Default::default();
        let mut scratch = LesionScratch::default();
        for c in 0..n_components {
            let run_ids = &order[start[c] as usize..start[c + 1] as usize];
            let kind = runs.runs[run_ids[0] as usize].kind;
            let k = kind as usize - 1;
            findings[k].components += 1;
            let voxels: u64 =
                run_ids.iter().map(|&i| u64::from(runs.runs[i as usize].x1 - runs.runs[i as usize].x0)).sum();
            if (voxels as f64 * self.voxel_mm3) < f64::from(self.config.min_lesion_volume_mm3) {
                findings[k].dropped_below_min_volume += 1;
                continue;
            }
            if self.config.denoise_erosion && !self.has_interior_voxel(&runs, run_ids, &kind_of) {
                findings[k].dropped_by_erosion += 1;
                continue;
            }
            let lesion = self.lesion(kind, &runs, run_ids, voxels, &mut scratch);
            keyed[k].push((lesion, c));
        }
        for (k, list) in keyed.iter_mut().enumerate() {
            // Nodules and cysts by longest diameter (their size in a report), effusions by
            // volume; then the other measure, then raster order of the first voxel.
            let by_diameter = Kind::ALL[k] != Kind::Effusion;
            list.sort_by(|(a, ca), (b, cb)| {
                let volume = b.voxels.cmp(&a.voxels);
                let diameter = b.longest_diameter_mm.total_cmp(&a.longest_diameter_mm);
                let first = if by_diameter { diameter.then(volume) } else { volume.then(diameter) };
                first.then(ca.cmp(cb))
            });
            let f = &mut findings[k];
            f.lesions = list
                .drain(..)
                .enumerate()
                .map(|(i, (mut l, _))| {
                    l.rank = i + 1;
                    l
                })
                .collect();
            f.count = f.lesions.len();
            if Kind::ALL[k] == Kind::Effusion {
                f.sides = self.effusion_sides(&f.lesions);
            }
        }
        let unknown_labels = histogram
            .iter()
            .enumerate()
            .skip(1)
            .filter(|&(label, &n)| n > 0 && self.table.table.iter().all(|e| e.id != label as u32))
            .map(|(label, &n)| LabelCount { label: label as u32, voxels: n })
            .collect();
        Attributes {
            schema_version: SCHEMA_VERSION,
            engine_version: crate::VERSION.to_string(),
            label_table: table_name.to_string(),
            grid: self.grid(),
            settings: self.settings(),
            organs: self.organs(&histogram),
            lesions: findings,
            unknown_labels,
            text: String::new(),
        }
    }

    /// Whether the component keeps a voxel after one erosion with the 6-neighbour cross (all
    /// six face neighbours inside the volume and of the same lesion kind).
    fn has_interior_voxel(&self, runs: &components::Runs, run_ids: &[u32], kind_of: &[u8; 65536]) -> bool {
        let [nx, ny, nz] = self.geometry.dims;
        let kind_at = |x: usize, y: usize, z: usize| kind_of[self.labels[x + nx * (y + ny * z)] as usize];
        run_ids.iter().any(|&i| {
            let r = runs.runs[i as usize];
            let (y, z) = (r.line as usize % ny, r.line as usize / ny);
            if y == 0 || y + 1 >= ny || z == 0 || z + 1 >= nz {
                return false;
            }
            let k = r.kind as u8;
            // x-neighbours are in the run for x0 < x < x1 - 1, and never outside the volume.
            (r.x0 as usize + 1..(r.x1 as usize).saturating_sub(1)).any(|x| {
                kind_at(x, y - 1, z) == k
                    && kind_at(x, y + 1, z) == k
                    && kind_at(x, y, z - 1) == k
                    && kind_at(x, y, z + 1) == k
            })
        })
    }

    /// The measurements of one kept component.
    fn lesion(
        &self,
        kind: Kind,
        runs: &components::Runs,
        run_ids: &[u32],
        voxels: u64,
        sc: &mut LesionScratch,
    ) -> Lesion {
        let [nx, ny, nz] = self.geometry.dims;
        let mut sum = [0f64; 3];
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        sc.segments.clear();
        for &i in run_ids {
            let r = runs.runs[i as usize];
            let (x0, x1) = (r.x0 as usize, r.x1 as usize);
            let (y, z) = (r.line as usize % ny, r.line as usize / ny);
            let n = (x1 - x0) as f64;
            sum[0] += (x0 + x1 - 1) as f64 * n / 2.0;
            sum[1] += y as f64 * n;
            sum[2] += z as f64 * n;
            for (axis, (a, b)) in [(x0, x1 - 1), (y, y), (z, z)].into_iter().enumerate() {
                lo[axis] = lo[axis].min(a);
                hi[axis] = hi[axis].max(b);
            }
            match self.axial_axis {
                2 => sc.segments.push(Segment { s: z as u32, r: y as u32, a0: r.x0, a1: r.x1 - 1 }),
                1 => sc.segments.push(Segment { s: y as u32, r: z as u32, a0: r.x0, a1: r.x1 - 1 }),
                _ => sc.segments.extend((x0..x1).map(|x| Segment {
                    s: x as u32,
                    r: z as u32,
                    a0: y as u32,
                    a1: y as u32,
                })),
            }
        }
        sc.segments.sort_unstable();
        let a = &self.geometry.affine;
        let col = |axis: usize| [a[0][axis], a[1][axis], a[2][axis]];
        let metric = PlaneMetric::new(col(self.plane[0]), col(self.plane[1]));
        // Non-empty segments always give a measure.
        let m = longest_axial(&sc.segments, &metric, &mut sc.hull).unwrap_or(diameter::AxialMeasure {
            slice: 0,
            longest_mm: 0.0,
            perpendicular_mm: 0.0,
            ends: [[0, 0]; 2],
        });
        let end = |e: [i64; 2]| {
            let mut p = [0.0; 3];
            p[self.axial_axis] = f64::from(m.slice);
            p[self.plane[0]] = e[0] as f64 / 2.0;
            p[self.plane[1]] = e[1] as f64 / 2.0;
            self.to_ras(p)
        };
        let centroid = [sum[0] / voxels as f64, sum[1] / voxels as f64, sum[2] / voxels as f64];
        let volume_mm3 = voxels as f64 * self.voxel_mm3;
        let touches_border = (0..3).any(|i| lo[i] == 0 || hi[i] + 1 == [nx, ny, nz][i]);
        let location = match kind {
            Kind::Nodule => self.nodule_location(runs, run_ids, centroid),
            Kind::Effusion => self.effusion_side(runs, run_ids, centroid),
            Kind::Cyst => self.cyst_side(runs, run_ids, centroid),
        };
        let category = match kind {
            Kind::Nodule => Some(self.nodule_category(m.longest_mm, m.perpendicular_mm)),
            Kind::Effusion => Some(self.effusion_grade(volume_mm3 / 1000.0)),
            Kind::Cyst => None,
        };
        Lesion {
            rank: 0,
            voxels,
            volume_mm3,
            volume_ml: volume_mm3 / 1000.0,
            longest_diameter_mm: m.longest_mm,
            perpendicular_diameter_mm: m.perpendicular_mm,
            axial_slice: m.slice,
            long_axis_ras_mm: [end(m.ends[0]), end(m.ends[1])],
            centroid_voxel: centroid,
            centroid_ras_mm: self.to_ras(centroid),
            bbox_voxel: [lo, hi],
            touches_border,
            location,
            category,
        }
    }

    fn nodule_category(&self, longest: f64, perpendicular: f64) -> String {
        let c = self.config;
        if longest > f64::from(c.mass_diameter_mm) {
            return "mass".into();
        }
        let d = match c.fleischner_diameter {
            FleischnerDiameter::Mean => (longest + perpendicular) / 2.0,
            FleischnerDiameter::Longest => longest,
        };
        let edges: Vec<f64> = c.fleischner_bins_mm.iter().map(|&v| f64::from(v)).collect();
        fleischner_bin(d, &edges)
    }

    fn effusion_grade(&self, ml: f64) -> String {
        let c = self.config;
        let i =
            c.effusion_grade_ml.iter().position(|&e| ml < f64::from(e)).unwrap_or(c.effusion_grade_ml.len());
        c.effusion_grades.get(i).cloned().unwrap_or_default()
    }

    fn effusion_sides(&self, lesions: &[Lesion]) -> Vec<SideVolume> {
        let mut out = Vec::new();
        for side in ["right", "left"] {
            let on: Vec<&Lesion> =
                lesions.iter().filter(|l| l.location.side.as_deref() == Some(side)).collect();
            if on.is_empty() {
                continue;
            }
            let ml: f64 = on.iter().map(|l| l.volume_ml).sum();
            out.push(SideVolume {
                side: side.into(),
                count: on.len(),
                volume_ml: ml,
                grade: self.effusion_grade(ml),
            });
        }
        out
    }
}

/// The Fleischner bin of diameter `d` for increasing `edges` `[e0, e1, ...]`: `<e0` below e0,
/// `e(k-1)-e(k)` from e(k-1) up to and including e(k), `>e(last)` above the last edge (with a
/// single edge, `>=e0` from e0 on). Fleischner's `<6`, `6-8`, `>8` for `[6, 8]`. Edges come
/// from f32 config values and are printed as such (6.5, not 6.5000000001).
fn fleischner_bin(d: f64, edges: &[f64]) -> String {
    let Some(&first) = edges.first() else { return "any size".into() };
    if d < first {
        return format!("<{} mm", first as f32);
    }
    if edges.len() == 1 {
        return format!(">={} mm", first as f32);
    }
    match edges.windows(2).find(|w| d <= w[1]) {
        Some(w) => format!("{}-{} mm", w[0] as f32, w[1] as f32),
        None => format!(">{} mm", edges[edges.len() - 1] as f32),
    }
}

/// Reusable buffers for [`Measure::lesion`].
#[derive(Default)]
struct LesionScratch {
    segments: Vec<Segment>,
    hull: HullScratch,
}

#[cfg(test)]
mod tests {
    use super::fleischner_bin;

    #[test]
    fn fleischner_bins_include_both_ends_of_the_middle_bin() {
        let e = [6.0, 8.0];
        let bins: Vec<String> = [5.99, 6.0, 7.0, 8.0, 8.01].iter().map(|&d| fleischner_bin(d, &e)).collect();
        assert_eq!(bins, ["<6 mm", "6-8 mm", "6-8 mm", "6-8 mm", ">8 mm"]);
        assert_eq!(fleischner_bin(6.0, &[6.0]), ">=6 mm");
        assert_eq!(fleischner_bin(1.0, &[]), "any size");
        assert_eq!(fleischner_bin(5.0, &[4.0, 6.0, 8.0]), "4-6 mm");
    }
}
