//! The attribute JSON document (`schema_version` [`SCHEMA_VERSION`]). Every number is in the
//! unit its name says; a value that could not be measured is `null` with `status`
//! `"not_assessed"` and a `reason`, never 0. Fields are only ever added (a new field does not
//! bump the version); a change of meaning or a removal does.

use serde::{Deserialize, Serialize};

/// Version of the JSON layout below.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything measured for one study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    pub schema_version: u32,
    /// The medregion version that measured it.
    pub engine_version: String,
    /// `totalseg`, `radgenome`, or the label file's path.
    pub label_table: String,
    pub grid: Grid,
    pub settings: Settings,
    /// Organ volumes in a fixed order: the `labels.organs` groups, then each lobe.
    pub organs: Vec<OrganVolume>,
    /// One entry per lesion kind, always in the order nodules, effusion, cysts.
    pub lesions: Vec<LesionFinding>,
    /// Label values present in the map but absent from the label table, with voxel counts.
    pub unknown_labels: Vec<LabelCount>,
    /// The prompt text block (SPEC §7), as rendered from this document.
    pub text: String,
}

/// The measured grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// |det| of the affine's 3×3 part: the volume of one voxel.
    pub voxel_volume_mm3: f64,
    /// nibabel axis codes of the voxel axes, e.g. `"LPS"`.
    pub orientation: String,
    /// The voxel axis (0 = i/x, 1 = j/y, 2 = k/z) closest to the patient's S-I axis; axial
    /// slices are the planes perpendicular to it in voxel space.
    pub axial_axis: usize,
    /// Angle between that axis and S-I, degrees (0 for an axial acquisition; > 0 for oblique
    /// or gantry-tilted grids, whose slices are then measured in their own plane).
    pub axial_tilt_deg: f64,
}

/// The settings the numbers depend on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub connectivity: u32,
    pub min_lesion_volume_mm3: f64,
    pub denoise_erosion: bool,
    pub mass_diameter_mm: f64,
    pub fleischner_bins_mm: Vec<f64>,
    /// `mean` or `longest`.
    pub fleischner_diameter: String,
    pub nearest_lobe_max_mm: f64,
    /// How diameters are measured: `"voxel-edge-midpoints-hull"`.
    pub diameter_points: String,
}

/// `measured`, or `not_assessed` with a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Measured,
    NotAssessed,
}

/// One organ (or lobe) volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrganVolume {
    /// `lungs`, `lung_right`, `lung_left`, `heart`, `liver`, `kidney_right`, `kidney_left`, or a
    /// lobe class name.
    pub key: String,
    pub status: Status,
    pub reason: Option<String>,
    /// Classes of the group found in the label table.
    pub classes: Vec<String>,
    pub voxels: Option<u64>,
    /// voxels × voxel volume / 1000.
    pub volume_ml: Option<f64>,
}

/// All lesions of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LesionFinding {
    /// `lung_nodule`, `pleural_effusion` or `kidney_cyst`.
    pub kind: String,
    pub status: Status,
    pub reason: Option<String>,
    pub classes: Vec<String>,
    /// Lesions kept (at least the minimum volume); equals `lesions.len()`.
    pub count: usize,
    /// All connected components before filtering.
    pub components: usize,
    pub dropped_below_min_volume: usize,
    pub dropped_by_erosion: usize,
    /// For effusions: volume per side (right first), empty otherwise.
    pub sides: Vec<SideVolume>,
    /// Largest first: nodules and cysts by longest diameter then volume, effusions by volume
    /// then longest diameter; ties by raster order of the first voxel.
    pub lesions: Vec<Lesion>,
}

/// Effusion volume on one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideVolume {
    pub side: String,
    pub count: usize,
    pub volume_ml: f64,
    pub grade: String,
}

/// One lesion (a 3D connected component).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lesion {
    /// 1 for the largest.
    pub rank: usize,
    pub voxels: u64,
    pub volume_mm3: f64,
    pub volume_ml: f64,
    /// Largest in-plane distance of the outline over all axial slices, mm.
    pub longest_diameter_mm: f64,
    /// Extent perpendicular to the long axis on the same slice, mm.
    pub perpendicular_diameter_mm: f64,
    /// Index along `grid.axial_axis` of the slice with the longest diameter.
    pub axial_slice: u32,
    /// Ends of the long axis, RAS+ mm.
    pub long_axis_ras_mm: [[f64; 3]; 2],
    /// Mean voxel index (x, y, z).
    pub centroid_voxel: [f64; 3],
    /// The centroid in RAS+ mm.
    pub centroid_ras_mm: [f64; 3],
    /// Inclusive voxel bounding box, `[min, max]` of (x, y, z).
    pub bbox_voxel: [[usize; 3]; 2],
    /// The lesion reaches the edge of the volume: it may continue outside, so its size is a
    /// lower bound.
    pub touches_border: bool,
    pub location: Location,
    /// Nodules: `"<6 mm"`, `"6-8 mm"`, `">8 mm"` (Fleischner bins) or `"mass"`; effusions: the
    /// grade; cysts: `null`.
    pub category: Option<String>,
}

/// Where a lesion is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Lobe class (nodules), or `null`.
    pub lobe: Option<String>,
    /// The lobe's phrase ("right upper lobe"), or `null`.
    pub lobe_phrase: Option<String>,
    /// `right` or `left` (from the lobe, the class name or the centroid), or `null`.
    pub side: Option<String>,
    /// `contact` (the lobe or side touched most), `nearest` (no contact: the lobe voxel nearest
    /// to the centroid, within `nearest_lobe_max_mm`), `class` (the lesion's own class name),
    /// `centroid` (centroid x against the centre of the field of view), `none` (no lobe near),
    /// `not_assessed` (no lobe classes in the label table).
    pub method: String,
    /// For `nearest`: the distance from the centroid to that lobe voxel's centre, mm.
    pub distance_mm: Option<f64>,
}

/// A label value and its voxel count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: u32,
    pub voxels: u64,
}
