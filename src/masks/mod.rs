//! The masks input (SPEC-model.md §6.3, §8; issue #6): organ and lesion masks on the CT's grid,
//! turned into the binary masks of the segmentation slots (six regions, three lesions) and into
//! one label map for the attribute extractor.
//!
//! A [`Masks`] holds one or more *sources* on one common grid:
//! * a **label map** (NIfTI, NRRD or a caller buffer) read with a label table ([`LabelScheme`]):
//!   [`Masks::from_label_map`], [`Masks::load`] on a file, [`Masks::add_label_map`] for more maps
//!   (the TotalSegmentator subtasks `lung_nodules`, `pleural_pericard_effusion`, `kidney_cysts`
//!   next to `total`, each with its own table);
//! * **binary masks by name** ([`Masks::load`] on a folder): one `<class>.nii.gz`, `.nii` or
//!   `.nrrd` file per class, the class being the file stem (the RadGenome-ChestCT layout
//!   `seg_<volume>/lung.nii.gz`, `trachea and bronchie.nii.gz`, ..., or TotalSegmentator's
//!   one-file-per-class output).
//!
//! Classes are matched **by name** against the groups of the first scheme (`labels.slots`,
//! `labels.organs`, `labels.lobes`), whatever source carries them: a voxel is in a group when
//! any source gives it one of the group's `classes` and none gives it one of its `exclude`
//! classes (so `mediastinum` minus `heart` works across sources).
//!
//! Decided behaviours (tested in `tests/masks.rs`):
//! * **Missing structures are not errors.** A class is *present* when at least one voxel of
//!   some source carries it. A slot none of whose classes is present has `present = false` and
//!   an all-zero mask; [`MasksReport`] lists, per slot and organ group, the classes found (with
//!   voxel counts) and those missing.
//! * **Label values absent from the table** are not an error: they belong to no class, are
//!   counted per source in [`MasksReport::unknown_labels`] and logged as a warning.
//! * **A table whose groups name an unknown structure** (a class in neither its own table nor
//!   a shipped one) is refused when the scheme is made or a [`Masks`] is built from it
//!   ([`LabelScheme::check_known_classes`]), naming the class.
//! * **An all-empty label map** (or folder of empty masks) is allowed: every slot is absent,
//!   [`MasksReport::empty`] is true and a warning is logged; the caller decides.
//! * **Folders**: files whose stem is in no group are loaded and reported as
//!   [`MasksReport::unused_classes`]; other files (not `.nii.gz`/`.nii`/`.nrrd`) and
//!   sub-folders are listed in [`MasksReport::ignored_files`]. A folder with no mask file, two
//!   files with the same stem, a file that is not a 3D volume or has another geometry than the
//!   first file are errors naming the file.
//! * **Binary mask values**: integers ≥ 0, with at most one non-zero value (0/1 and 0/255 both
//!   work); a non-integer or negative value is an error naming the file and the voxel; two
//!   different non-zero values (a label map put in a mask folder) are an error naming both.
//! * **Geometry**: every source must have the first source's grid, and [`Masks::slot_masks`]
//!   requires the CT's ([`Geometry::check_same_grid`]: dims exactly, spacing, directions and
//!   origin within 1e-3 mm / 1e-4): an [`Error::Shape`] describing both.
//! * **Resampling** ([`Masks::slot_masks`]): each slot's binary mask is built on the source
//!   grid and sent through [`Preprocessed::map_mask`] (the CT's reorientation, crop and
//!   resize). With the default nearest-exact mask interpolation this equals resampling the label
//!   map and looking the slot up; with `trilinear` (majority) it is the majority of the slot's
//!   own mask, which resampling the label map would not give.
//! * **Merging** ([`Masks::merged_labels`]): a single label map is returned as it is, with its
//!   scheme (so attributes are exactly those of the original map). Several sources are merged
//!   by priority where they overlap: (1) classes of the lesion slots (`lung_nodule`,
//!   `pleural_effusion`, `kidney_cyst`: lesions are drawn over organs, as a nodule over its
//!   lobe), (2) classes of `labels.organs` and `labels.lobes` (measured volumes stay complete),
//!   (3) every other class; within a level the earlier source wins, and within a folder the
//!   class listed first in the scheme's table (then by file name). Merged ids are the first
//!   scheme's ids; classes it lacks get the next free ids. Unknown label values are dropped
//!   from a merged map (they are in the report).

mod scheme;

pub use scheme::{LabelScheme, TOTALSEG_SUBTASKS, TOTALSEG_TOTAL_JSON};

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::log::Level;
use crate::model::config::{ClassGroup, LabelConfig, LabelEntry, ModelConfig};
use crate::mr_log;
use crate::preprocess::{labels_from_volume, Preprocessed};
use crate::volume::{Geometry, Volume};

/// Binary masks of the segmentation slots on the preprocessed grid.
#[derive(Clone, Debug)]
pub struct SlotMasks {
    /// `[D, H, W]` of the preprocessed volume.
    pub shape: [usize; 3],
    /// Slot keys, in `config.segmentation` order.
    pub keys: Vec<String>,
    /// One mask per slot, `D*H*W` bytes each (0 or 1), `data[(d*H + h)*W + w]`, the layout of
    /// `Preprocessed::data`.
    pub masks: Vec<Vec<u8>>,
    /// Whether any class of the slot exists in the inputs at all (false = missing structure;
    /// its mask is all zero).
    pub present: Vec<bool>,
}

/// Voxels of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClassVoxels {
    pub class: String,
    pub voxels: u64,
}

/// One source of a [`Masks`], as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    /// The file, or `buffer`.
    pub source: String,
    /// `label_map` or `binary_mask`.
    pub kind: String,
    /// The label table's name (label maps) or `file name` (binary masks).
    pub label_table: String,
    /// Classes with at least one voxel in this source, in table order.
    pub classes: Vec<ClassVoxels>,
}

/// A label value that the source's table does not name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnknownLabel {
    pub source: String,
    pub label: u32,
    pub voxels: u64,
}

/// A slot's or organ's classes: which were found and which are missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupReport {
    pub key: String,
    /// At least one of `classes` has a voxel.
    pub present: bool,
    /// Classes of the group with voxels (summed over sources, before `exclude`).
    pub found: Vec<ClassVoxels>,
    /// Classes of the group no source has a voxel of.
    pub missing: Vec<String>,
    /// The group's `exclude` classes.
    pub exclude: Vec<String>,
}

/// What a [`Masks`] holds: present and missing structures, for reports and logs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MasksReport {
    /// The scheme whose groups make slots and organs.
    pub label_table: String,
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub sources: Vec<SourceReport>,
    /// No class has a voxel in any source (an all-empty label map).
    pub empty: bool,
    /// `labels.slots`, in the scheme's order.
    pub slots: Vec<GroupReport>,
    /// `labels.organs`, in the scheme's order.
    pub organs: Vec<GroupReport>,
    /// Classes with voxels that no slot, organ or lobe group uses.
    pub unused_classes: Vec<ClassVoxels>,
    /// Label values absent from their source's table (not an error; they belong to no class).
    pub unknown_labels: Vec<UnknownLabel>,
    /// Folder entries that are not mask files (`.nii.gz`, `.nii`, `.nrrd`).
    pub ignored_files: Vec<String>,
}

/// The voxels of one source.
#[derive(Clone, Debug)]
enum Data {
    /// A label map, `labels[x + nx * (y + ny * z)]`.
    Labels(Vec<u16>),
    /// A binary mask as a bit set (bit `i % 64` of word `i / 64`).
    Bits(Vec<u64>),
}

#[derive(Clone, Debug)]
struct Source {
    origin: String,
    table_name: String,
    data: Data,
    /// Value → class (label maps: the table's entries with ids ≤ 65535, in table order; binary
    /// masks: `(1, stem)`).
    classes: Vec<(u16, String)>,
    /// Non-zero values with at least one voxel, ascending (binary masks: `(1, count)`).
    counts: Vec<(u16, u64)>,
}

impl Source {
    fn label_map(origin: String, labels: Vec<u16>, table: &LabelScheme) -> Source {
        let mut histogram = vec![0u64; 65536];
        for &l in &labels {
            histogram[l as usize] += 1;
        }
        let counts = histogram
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, &n)| n > 0)
            .map(|(v, &n)| (v as u16, n))
            .collect();
        let classes = table
            .labels
            .table
            .iter()
            .filter_map(|e| u16::try_from(e.id).ok().map(|id| (id, e.name.clone())))
            .collect();
        Source { origin, table_name: table.name.clone(), data: Data::Labels(labels), classes, counts }
    }

    fn class_of(&self, value: u16) -> Option<&str> {
        self.classes.iter().find(|(v, _)| *v == value).map(|(_, c)| c.as_str())
    }

    fn voxels_of(&self, class: &str) -> u64 {
        self.classes
            .iter()
            .filter(|(_, c)| c == class)
            .map(|(v, _)| self.counts.iter().find(|(cv, _)| cv == v).map_or(0, |(_, n)| *n))
            .sum()
    }

    /// `lut[value]`: the value's class is in `classes` (label maps: 65536 entries; binary
    /// masks: `lut[1]`).
    fn lut(&self, classes: &[String]) -> Vec<bool> {
        let mut lut = vec![false; 65536];
        for (v, c) in &self.classes {
            if classes.contains(c) {
                lut[*v as usize] = true;
            }
        }
        lut
    }

    /// Sets `buf[i] = value` where voxel `i`'s class is in `classes`.
    fn paint(&self, classes: &[String], buf: &mut [u8], value: u8) {
        let lut = self.lut(classes);
        if !lut.contains(&true) {
            return;
        }
        match &self.data {
            Data::Labels(labels) => {
                for (b, &l) in buf.iter_mut().zip(labels) {
                    if lut[l as usize] {
                        *b = value;
                    }
                }
            }
            Data::Bits(words) => for_each_bit(words, buf.len(), |i| buf[i] = value),
        }
    }
}

/// Calls `f(i)` for every set bit `i < n`.
fn for_each_bit(words: &[u64], n: usize, mut f: impl FnMut(usize)) {
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let i = w * 64 + bits.trailing_zeros() as usize;
            if i < n {
                f(i);
            }
            bits &= bits - 1;
        }
    }
}

/// Binary masks and label maps on one grid, with the label scheme that groups their classes
/// (see the module doc).
#[derive(Clone, Debug)]
pub struct Masks {
    geometry: Geometry,
    scheme: LabelScheme,
    sources: Vec<Source>,
    ignored_files: Vec<String>,
}

/// File extensions of mask files, longest first.
const MASK_EXTENSIONS: [&str; 3] = [".nii.gz", ".nii", ".nrrd"];

/// The name of a volume file without its extension (`.nii.gz`, `.nii`, `.nrrd`, any case);
/// `None` for other files. Used for mask folders and the CLI's batch mode.
pub fn volume_stem(file_name: &str) -> Option<&str> {
    let lower = file_name.to_ascii_lowercase();
    MASK_EXTENSIONS
        .iter()
        .find(|ext| lower.ends_with(*ext) && lower.len() > ext.len())
        .map(|ext| &file_name[..file_name.len() - ext.len()])
}

impl Masks {
    /// A label map plus a label table (LabelScheme: name + LabelConfig). Refuses a scheme
    /// naming unknown classes and non-integral or negative labels.
    pub fn from_label_map(volume: &Volume, scheme: &LabelScheme) -> Result<Masks> {
        scheme.check_known_classes()?;
        let labels = labels_from_volume(volume)?;
        let mut masks = Masks {
            geometry: volume.geometry().clone(),
            scheme: scheme.clone(),
            sources: Vec::new(),
            ignored_files: Vec::new(),
        };
        masks.push(Source::label_map(volume.source().to_string(), labels, scheme));
        Ok(masks)
    }

    /// A path: a file is one label map read with `scheme`; a directory holds binary masks by
    /// name, one NIfTI/NRRD file per class (`<class>.nii.gz|.nii|.nrrd`, class = file stem),
    /// grouped into slots and organs by `scheme.labels`.
    pub fn load(path: &Path, scheme: &LabelScheme) -> Result<Masks> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            let volume = Volume::load(path)?;
            return Masks::from_label_map(&volume, scheme);
        }
        scheme.check_known_classes()?;
        let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
        let mut ignored = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.path().is_file();
            match volume_stem(&name) {
                Some(stem) if is_file => files.push((stem.to_string(), entry.path())),
                _ => ignored.push(name),
            }
        }
        ignored.sort();
        if files.is_empty() {
            return Err(Error::format(
                path.display().to_string(),
                "no mask files (<class>.nii.gz, <class>.nii or <class>.nrrd) in the folder",
            ));
        }
        // The scheme's table order first (its ids), then the other classes by name.
        let rank = |stem: &str| scheme.labels.table.iter().position(|e| e.name == stem).unwrap_or(usize::MAX);
        files.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        for pair in files.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Error::format(
                    path.display().to_string(),
                    format!(
                        "two files give the class `{}`: {} and {}",
                        pair[0].0,
                        pair[0].1.display(),
                        pair[1].1.display()
                    ),
                ));
            }
        }
        let mut masks: Option<Masks> = None;
        for (stem, file) in &files {
            let volume = Volume::load(file)?;
            let source = binary_source(&volume, stem, &file.display().to_string())?;
            match &mut masks {
                None => {
                    masks = Some(Masks {
                        geometry: volume.geometry().clone(),
                        scheme: scheme.clone(),
                        sources: vec![source],
                        ignored_files: ignored.clone(),
                    })
                }
                Some(m) => {
                    m.check_grid(volume.geometry(), &file.display().to_string())?;
                    m.sources.push(source);
                }
            }
        }
        let masks = masks.ok_or_else(|| Error::Internal("no mask file read".into()))?;
        masks.warn();
        Ok(masks)
    }

    /// Adds a label map on the same grid with its own table (only `table.labels.table` is
    /// used; slots and organs keep the first scheme's groups), e.g. a TotalSegmentator subtask
    /// output ([`LabelScheme::totalseg_subtask`]) next to `total`.
    pub fn add_label_map(&mut self, volume: &Volume, table: &LabelScheme) -> Result<()> {
        self.check_grid(volume.geometry(), volume.source())?;
        let labels = labels_from_volume(volume)?;
        self.push(Source::label_map(volume.source().to_string(), labels, table));
        Ok(())
    }

    /// The common grid of the sources.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The scheme whose groups make slots and organs.
    pub fn scheme(&self) -> &LabelScheme {
        &self.scheme
    }

    fn check_grid(&self, other: &Geometry, what: &str) -> Result<()> {
        self.geometry.check_same_grid(other, what).map_err(|e| match e {
            Error::Shape { expected, found, .. } => Error::Shape {
                what: format!(
                    "{what}: geometry must match the first mask source ({})",
                    self.sources.first().map_or("", |s| s.origin.as_str())
                ),
                expected,
                found,
            },
            e => e,
        })
    }

    fn push(&mut self, source: Source) {
        self.sources.push(source);
        self.warn();
    }

    /// Logs unknown labels of the newest source and an all-empty input.
    fn warn(&self) {
        if let Some(s) = self.sources.last() {
            for &(v, n) in &s.counts {
                if s.class_of(v).is_none() {
                    mr_log!(
                        Level::Warn,
                        "masks: label value {v} ({n} voxels) of {} is not in the label table `{}`; ignored",
                        s.origin,
                        s.table_name
                    );
                }
            }
        }
        if self.is_empty() {
            mr_log!(Level::Warn, "masks: no class has a voxel; every slot is absent");
        }
    }

    /// Voxels of `class` over all sources.
    fn class_voxels(&self, class: &str) -> u64 {
        self.sources.iter().map(|s| s.voxels_of(class)).sum()
    }

    fn is_empty(&self) -> bool {
        self.sources.iter().all(|s| s.counts.iter().all(|&(v, _)| s.class_of(v).is_none()))
    }

    /// `buf` (source grid) = the group's mask: any class of `group.classes`, minus any of
    /// `group.exclude`.
    fn group_mask(&self, group: &ClassGroup, buf: &mut [u8]) {
        buf.fill(0);
        for s in &self.sources {
            s.paint(&group.classes, buf, 1);
        }
        for s in &self.sources {
            s.paint(&group.exclude, buf, 0);
        }
    }

    /// Slot masks for `config.segmentation` (class groups from the scheme's `labels.slots`),
    /// sent through `pre`'s reorientation, crop and resize. The masks must be on the CT's grid
    /// (`pre.source_geometry`); a slot key the scheme has no group for is an error.
    pub fn slot_masks(&self, pre: &Preprocessed, config: &ModelConfig) -> Result<SlotMasks> {
        let origins: Vec<&str> = self.sources.iter().map(|s| s.origin.as_str()).collect();
        pre.source_geometry.check_same_grid(&self.geometry, &format!("masks ({})", origins.join(", ")))?;
        let mut groups = Vec::with_capacity(config.segmentation.len());
        for slot in &config.segmentation {
            let group = self.scheme.labels.slots.iter().find(|g| g.key == slot.key).ok_or_else(|| {
                Error::invalid(
                    "segmentation",
                    format!(
                        "the slot `{}` has no class group in the labels.slots of label table `{}`",
                        slot.key, self.scheme.name
                    ),
                )
            })?;
            groups.push(group);
        }
        let [d, h, w] = pre.shape;
        let mut buf = vec![0u8; self.geometry.voxel_count()];
        let mut out = SlotMasks {
            shape: pre.shape,
            keys: Vec::with_capacity(groups.len()),
            masks: Vec::with_capacity(groups.len()),
            present: Vec::with_capacity(groups.len()),
        };
        for group in groups {
            let present = group.classes.iter().any(|c| self.class_voxels(c) > 0);
            let mask = if present {
                self.group_mask(group, &mut buf);
                pre.map_mask(&buf, &self.geometry)?
            } else {
                vec![0u8; d * h * w]
            };
            out.keys.push(group.key.clone());
            out.masks.push(mask);
            out.present.push(present);
        }
        Ok(out)
    }

    fn group_report(&self, g: &ClassGroup) -> GroupReport {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for c in &g.classes {
            match self.class_voxels(c) {
                0 => missing.push(c.clone()),
                n => found.push(ClassVoxels { class: c.clone(), voxels: n }),
            }
        }
        GroupReport {
            key: g.key.clone(),
            present: !found.is_empty(),
            found,
            missing,
            exclude: g.exclude.clone(),
        }
    }

    /// Whether some slot, organ or lobe group names `class`.
    fn is_used(&self, class: &str) -> bool {
        let l = &self.scheme.labels;
        let in_groups =
            |gs: &[ClassGroup]| gs.iter().any(|g| g.classes.iter().chain(&g.exclude).any(|c| c == class));
        in_groups(&l.slots) || in_groups(&l.organs) || l.lobes.iter().any(|lobe| lobe.class == class)
    }

    /// What is present and missing: per source, per slot and organ group, unused classes and
    /// unknown label values.
    pub fn report(&self) -> MasksReport {
        let mut sources = Vec::new();
        let mut unknown_labels = Vec::new();
        let mut all: Vec<ClassVoxels> = Vec::new();
        for s in &self.sources {
            let mut classes = Vec::new();
            for (v, c) in &s.classes {
                if let Some(&(_, n)) = s.counts.iter().find(|(cv, _)| cv == v) {
                    classes.push(ClassVoxels { class: c.clone(), voxels: n });
                    match all.iter_mut().find(|a| &a.class == c) {
                        Some(a) => a.voxels += n,
                        None => all.push(ClassVoxels { class: c.clone(), voxels: n }),
                    }
                }
            }
            for &(v, n) in &s.counts {
                if s.class_of(v).is_none() {
                    unknown_labels.push(UnknownLabel {
                        source: s.origin.clone(),
                        label: u32::from(v),
                        voxels: n,
                    });
                }
            }
            sources.push(SourceReport {
                source: s.origin.clone(),
                kind: match s.data {
                    Data::Labels(_) => "label_map",
                    Data::Bits(_) => "binary_mask",
                }
                .into(),
                label_table: s.table_name.clone(),
                classes,
            });
        }
        let l = &self.scheme.labels;
        MasksReport {
            label_table: self.scheme.name.clone(),
            dims: self.geometry.dims,
            spacing_mm: self.geometry.spacing(),
            empty: all.is_empty(),
            slots: l.slots.iter().map(|g| self.group_report(g)).collect(),
            organs: l.organs.iter().map(|g| self.group_report(g)).collect(),
            unused_classes: all.into_iter().filter(|c| !self.is_used(&c.class)).collect(),
            unknown_labels,
            ignored_files: self.ignored_files.clone(),
            sources,
        }
    }

    /// One u16 label map on the masks' grid (`labels[x + nx * (y + ny * z)]`) and the scheme
    /// describing it, for `attributes::compute`. Overlaps follow the priority rule of the module
    /// doc; a single label map comes back unchanged with its scheme.
    pub fn merged_labels(&self) -> Result<(Vec<u16>, LabelScheme)> {
        if let [Source { data: Data::Labels(labels), .. }] = self.sources.as_slice() {
            return Ok((labels.clone(), self.scheme.clone()));
        }
        // Merged table: the scheme's entries, then the other classes of the sources.
        let mut table: Vec<LabelEntry> = self.scheme.labels.table.clone();
        let mut next = table.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        for s in &self.sources {
            for (_, c) in &s.classes {
                if !table.iter().any(|e| &e.name == c) {
                    if next > 65535 {
                        return Err(Error::invalid(
                            "masks",
                            format!("more classes than a 16-bit label map holds (at `{c}`)"),
                        ));
                    }
                    table.push(LabelEntry { id: next, name: c.clone() });
                    next += 1;
                }
            }
        }
        let l = &self.scheme.labels;
        let lesion_classes: Vec<String> = l
            .slots
            .iter()
            .filter(|g| ["lung_nodule", "pleural_effusion", "kidney_cyst"].contains(&g.key.as_str()))
            .flat_map(|g| g.classes.iter().cloned())
            .collect();
        let organ_classes: Vec<String> = l
            .organs
            .iter()
            .flat_map(|g| g.classes.iter().cloned())
            .chain(l.lobes.iter().map(|lobe| lobe.class.clone()))
            .collect();
        let level = |c: &str| {
            if lesion_classes.iter().any(|x| x == c) {
                0
            } else if organ_classes.iter().any(|x| x == c) {
                1
            } else {
                2
            }
        };
        let n = self.geometry.voxel_count();
        let mut merged = vec![0u16; n];
        // Painted from the lowest priority up, the last painter winning: levels 2, 1, 0; within
        // a level sources and classes in reverse order, so the earlier one is painted last.
        let mut id_of = vec![0u16; 65536];
        for lvl in [2, 1, 0] {
            for s in self.sources.iter().rev() {
                id_of.fill(0);
                let mut any = false;
                for (v, c) in &s.classes {
                    if level(c) == lvl {
                        let id = table.iter().find(|e| &e.name == c).map_or(0, |e| e.id);
                        id_of[*v as usize] = id as u16;
                        any |= s.counts.iter().any(|(cv, _)| cv == v);
                    }
                }
                if !any {
                    continue;
                }
                match &s.data {
                    Data::Labels(labels) => {
                        // Within one label map a voxel has one value: no order to settle.
                        for (m, &v) in merged.iter_mut().zip(labels) {
                            let id = id_of[v as usize];
                            if id != 0 {
                                *m = id;
                            }
                        }
                    }
                    Data::Bits(words) => {
                        let id = id_of[1];
                        for_each_bit(words, n, |i| merged[i] = id);
                    }
                }
            }
        }
        let name = {
            let mut names: Vec<&str> = vec![self.scheme.name.as_str()];
            for s in &self.sources {
                if !names.contains(&s.table_name.as_str()) {
                    names.push(&s.table_name);
                }
            }
            names.join("+")
        };
        Ok((merged, LabelScheme { name, labels: LabelConfig { table, ..self.scheme.labels.clone() } }))
    }
}

/// A binary mask file as a source of class `stem` (values: integers ≥ 0, at most one non-zero
/// value).
fn binary_source(volume: &Volume, stem: &str, origin: &str) -> Result<Source> {
    let labels = labels_from_volume(volume)?;
    let n = labels.len();
    let mut words = vec![0u64; n.div_ceil(64)];
    let mut value: Option<u16> = None;
    let mut count = 0u64;
    for (i, &l) in labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        match value {
            None => value = Some(l),
            Some(v) if v != l => {
                let [nx, ny, _] = volume.dims();
                return Err(Error::format(
                    origin,
                    format!(
                        "a binary mask has one non-zero value, this file has {v} and {l} (at voxel \
                         ({}, {}, {})); a label map goes in a file with a label table, not in a mask folder",
                        i % nx,
                        (i / nx) % ny,
                        i / (nx * ny)
                    ),
                ));
            }
            Some(_) => {}
        }
        words[i / 64] |= 1 << (i % 64);
        count += 1;
    }
    Ok(Source {
        origin: origin.to_string(),
        table_name: "file name".into(),
        data: Data::Bits(words),
        classes: vec![(1, stem.to_string())],
        counts: if count > 0 { vec![(1, count)] } else { Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use super::volume_stem;

    #[test]
    fn mask_file_stems() {
        assert_eq!(volume_stem("trachea and bronchie.nii.gz"), Some("trachea and bronchie"));
        assert_eq!(volume_stem("lung.NII"), Some("lung"));
        assert_eq!(volume_stem("heart.nrrd"), Some("heart"));
        assert_eq!(volume_stem(".nii.gz"), None);
        assert_eq!(volume_stem("notes.txt"), None);
    }
}
