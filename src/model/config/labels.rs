//! Report regions, segmentation slots, label tables (SPEC-model.md §1, §6.3, §8) and the
//! patient-attribute thresholds (§7).

use serde::{Deserialize, Serialize};

use super::check;
use crate::Result;

/// One report region: the model is prompted once per region (SPEC §9.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Stable key (`lung`, ...): also the key of the segmentation slot giving its mask.
    pub key: String,
    /// `{region_name}` in the instruction [INFERRED].
    pub name: String,
    /// Header used when merging with headers ("Lung: ...").
    pub header: String,
}

/// One segmentation slot: two tokens (`<mask><pos>`) at a fixed place in the prompt, present
/// whether or not the mask is empty [PAPER].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    pub key: String,
    /// `{name}` in the segmentation list.
    pub name: String,
    /// A lesion (nodule, effusion, cyst) rather than an anatomical region.
    pub lesion: bool,
}

/// The six regions in the paper's order [PAPER], with INFERRED prompt names.
pub fn default_regions() -> Vec<RegionConfig> {
    [
        ("lung", "lung", "Lung"),
        ("large_airways", "large airways", "Large airways"),
        ("mediastinum", "mediastinum", "Mediastinum"),
        ("heart_great_vessels", "heart and great vessels", "Heart and great vessels"),
        ("osseous", "osseous structures", "Osseous structures"),
        ("upper_abdomen", "upper abdomen", "Upper abdomen"),
    ]
    .iter()
    .map(|(k, n, h)| RegionConfig { key: k.to_string(), name: n.to_string(), header: h.to_string() })
    .collect()
}

/// The nine segmentation slots: the six regions, then three lesions [INFERRED from PAPER].
pub fn default_slots() -> Vec<SlotConfig> {
    let mut slots: Vec<SlotConfig> = default_regions()
        .into_iter()
        .map(|r| SlotConfig { key: r.key, name: r.name, lesion: false })
        .collect();
    for (k, n) in [
        ("lung_nodule", "lung nodule"),
        ("pleural_effusion", "pleural effusion"),
        ("kidney_cyst", "kidney cyst"),
    ] {
        slots.push(SlotConfig { key: k.to_string(), name: n.to_string(), lesion: true });
    }
    slots
}

/// One entry of a label table (label-map value → class name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelEntry {
    pub id: u32,
    pub name: String,
}

/// A mask built from classes: the union of `classes` minus the union of `exclude`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassGroup {
    pub key: String,
    pub classes: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A lung-lobe class and how the attribute text names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LobeName {
    pub class: String,
    pub phrase: String,
}

/// Label tables: how class masks make the segmentation slots and the measured organs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// Label table used when masks come without their own: TotalSegmentator v2 `total` ids
    /// [CONFIRMED §8.3] for the classes used here, plus the subtask classes (lung_nodules,
    /// pleural_effusion, lung_airways, mediastinum, pericardial_effusion) at 118.. [INFERRED].
    #[serde(default = "default_table")]
    pub table: Vec<LabelEntry>,
    /// Classes of each segmentation slot [INFERRED, SPEC §8.3 table].
    #[serde(default = "default_slot_groups")]
    pub slots: Vec<ClassGroup>,
    /// Classes of each measured organ (`lungs`, `lung_right`, `lung_left`, `heart`, `liver`,
    /// `kidney_right`, `kidney_left`) [SPEC §7, §8.3].
    #[serde(default = "default_organ_groups")]
    pub organs: Vec<ClassGroup>,
    /// Lobe classes and their names, for nodule locations [INFERRED].
    #[serde(default = "default_lobes")]
    pub lobes: Vec<LobeName>,
}

fn default_table() -> Vec<LabelEntry> {
    let mut t: Vec<(u32, String)> = [
        (1, "spleen"),
        (2, "kidney_right"),
        (3, "kidney_left"),
        (4, "gallbladder"),
        (5, "liver"),
        (6, "stomach"),
        (7, "pancreas"),
        (8, "adrenal_gland_right"),
        (9, "adrenal_gland_left"),
        (10, "lung_upper_lobe_left"),
        (11, "lung_lower_lobe_left"),
        (12, "lung_upper_lobe_right"),
        (13, "lung_middle_lobe_right"),
        (14, "lung_lower_lobe_right"),
        (15, "esophagus"),
        (16, "trachea"),
        (17, "thyroid_gland"),
        (18, "small_bowel"),
        (19, "duodenum"),
        (20, "colon"),
        (23, "kidney_cyst_left"),
        (24, "kidney_cyst_right"),
        (51, "heart"),
        (52, "aorta"),
        (53, "pulmonary_vein"),
        (54, "brachiocephalic_trunk"),
        (55, "subclavian_artery_right"),
        (56, "subclavian_artery_left"),
        (57, "common_carotid_artery_right"),
        (58, "common_carotid_artery_left"),
        (59, "brachiocephalic_vein_left"),
        (60, "brachiocephalic_vein_right"),
        (61, "atrial_appendage_left"),
        (62, "superior_vena_cava"),
        (63, "inferior_vena_cava"),
        (64, "portal_vein_and_splenic_vein"),
        (69, "humerus_left"),
        (70, "humerus_right"),
        (71, "scapula_left"),
        (72, "scapula_right"),
        (73, "clavicula_left"),
        (74, "clavicula_right"),
        (79, "spinal_cord"),
        (116, "sternum"),
        (117, "costal_cartilages"),
        (118, "lung_nodules"),
        (119, "pleural_effusion"),
        (120, "lung_airways"),
        (121, "mediastinum"),
        (122, "pericardial_effusion"),
    ]
    .iter()
    .map(|(id, n)| (*id, n.to_string()))
    .collect();
    // 26 S1, 27 L5 .. 31 L1, 32 T12 .. 43 T1, 44 C7 .. 50 C1.
    t.push((26, "vertebrae_S1".to_string()));
    for i in 0..5u32 {
        t.push((27 + i, format!("vertebrae_L{}", 5 - i)));
    }
    for i in 0..12u32 {
        t.push((32 + i, format!("vertebrae_T{}", 12 - i)));
    }
    for i in 0..7u32 {
        t.push((44 + i, format!("vertebrae_C{}", 7 - i)));
    }
    for i in 0..12u32 {
        t.push((92 + i, format!("rib_left_{}", i + 1)));
        t.push((104 + i, format!("rib_right_{}", i + 1)));
    }
    t.sort_by_key(|(id, _)| *id);
    t.into_iter().map(|(id, name)| LabelEntry { id, name }).collect()
}

fn group(key: &str, classes: &[&str], exclude: &[&str]) -> ClassGroup {
    ClassGroup {
        key: key.to_string(),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        exclude: exclude.iter().map(|c| c.to_string()).collect(),
    }
}

const LOBES_RIGHT: [&str; 3] = ["lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"];
const LOBES_LEFT: [&str; 2] = ["lung_upper_lobe_left", "lung_lower_lobe_left"];

fn default_slot_groups() -> Vec<ClassGroup> {
    let lobes: Vec<&str> = LOBES_RIGHT.iter().chain(&LOBES_LEFT).copied().collect();
    let mut lung = lobes.clone();
    lung.push("pleural_effusion");
    let mut osseous: Vec<String> = Vec::new();
    for i in 1..=12 {
        osseous.push(format!("vertebrae_T{i}"));
    }
    for i in 1..=5 {
        osseous.push(format!("vertebrae_L{i}"));
    }
    for side in ["left", "right"] {
        for i in 1..=12 {
            osseous.push(format!("rib_{side}_{i}"));
        }
    }
    for c in [
        "sternum",
        "costal_cartilages",
        "clavicula_left",
        "clavicula_right",
        "scapula_left",
        "scapula_right",
        "humerus_left",
        "humerus_right",
    ] {
        osseous.push(c.to_string());
    }
    let osseous: Vec<&str> = osseous.iter().map(String::as_str).collect();
    vec![
        group("lung", &lung, &[]),
        group("large_airways", &["trachea", "lung_airways"], &[]),
        group("mediastinum", &["mediastinum", "esophagus"], &["heart"]),
        group(
            "heart_great_vessels",
            &[
                "heart",
                "aorta",
                "pulmonary_vein",
                "superior_vena_cava",
                "brachiocephalic_trunk",
                "brachiocephalic_vein_left",
                "brachiocephalic_vein_right",
                "subclavian_artery_left",
                "subclavian_artery_right",
                "common_carotid_artery_left",
                "common_carotid_artery_right",
                "atrial_appendage_left",
                "inferior_vena_cava",
                "pericardial_effusion",
            ],
            &[],
        ),
        group("osseous", &osseous, &[]),
        group(
            "upper_abdomen",
            &[
                "liver",
                "spleen",
                "stomach",
                "gallbladder",
                "pancreas",
                "kidney_left",
                "kidney_right",
                "adrenal_gland_left",
                "adrenal_gland_right",
                "duodenum",
                "portal_vein_and_splenic_vein",
                "small_bowel",
                "colon",
            ],
            &[],
        ),
        group("lung_nodule", &["lung_nodules"], &[]),
        group("pleural_effusion", &["pleural_effusion"], &[]),
        group("kidney_cyst", &["kidney_cyst_left", "kidney_cyst_right"], &[]),
    ]
}

fn default_organ_groups() -> Vec<ClassGroup> {
    let lobes: Vec<&str> = LOBES_RIGHT.iter().chain(&LOBES_LEFT).copied().collect();
    vec![
        group("lungs", &lobes, &[]),
        group("lung_right", &LOBES_RIGHT, &[]),
        group("lung_left", &LOBES_LEFT, &[]),
        group("heart", &["heart"], &[]),
        group("liver", &["liver"], &[]),
        group("kidney_right", &["kidney_right"], &[]),
        group("kidney_left", &["kidney_left"], &[]),
    ]
}

fn default_lobes() -> Vec<LobeName> {
    [
        ("lung_upper_lobe_right", "right upper lobe"),
        ("lung_middle_lobe_right", "right middle lobe"),
        ("lung_lower_lobe_right", "right lower lobe"),
        ("lung_upper_lobe_left", "left upper lobe"),
        ("lung_lower_lobe_left", "left lower lobe"),
    ]
    .iter()
    .map(|(c, p)| LobeName { class: c.to_string(), phrase: p.to_string() })
    .collect()
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            table: default_table(),
            slots: default_slot_groups(),
            organs: default_organ_groups(),
            lobes: default_lobes(),
        }
    }
}

/// The RadGenome-ChestCT scheme as shipped (`data/labels/radgenome.json`).
const RADGENOME_JSON: &str = include_str!("../../../data/labels/radgenome.json");

/// A label table for RadGenome-ChestCT region masks merged into one label map [INFERRED ids:
/// the ten first-level regions in the order of SPEC §8.1, 1..=10], read from
/// `data/labels/radgenome.json`. It has no lobes, kidneys, liver or lesion classes, so those
/// attributes come out "not assessed"; the lungs and the heart are measured from the `lung`
/// and `heart` regions. Slots (SPEC §8.1): lung = lung + pleura, large airways = trachea and
/// bronchie, mediastinum = mediastinum + esophagus + thyroid, heart = heart, osseous = bone,
/// upper abdomen = abdomen; `breast` is in no slot; the lesion slots keep their
/// TotalSegmentator classes (absent here).
pub fn radgenome_labels() -> LabelConfig {
    // The file is checked by the unit test below, so parsing cannot fail.
    LabelConfig::from_json(RADGENOME_JSON).unwrap_or_default()
}

impl LabelConfig {
    /// Parses a label configuration (strict; missing fields take the TotalSegmentator
    /// defaults, so `{"table": [{"id": 1, "name": "lung_nodules"}]}` is a complete file) and
    /// checks the table: ids unique and non-zero, names unique.
    pub fn from_json(json: &str) -> Result<LabelConfig> {
        let c: LabelConfig = serde_json::from_str(json)
            .map_err(|e| crate::Error::format("label table", format!("invalid JSON: {e}")))?;
        validate(&default_regions(), &default_slots(), &c)?;
        Ok(c)
    }

    /// The id of a class name in the table.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.table.iter().find(|e| e.name == name).map(|e| e.id)
    }
}

fn check_unique<'a>(field: &str, keys: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for k in keys {
        check(!k.is_empty(), || format!("{field} has an empty key"))?;
        check(!seen.contains(&k), || format!("{field} has the key `{k}` twice"))?;
        seen.push(k);
    }
    Ok(())
}

/// Cross-checks of regions, slots and label tables.
pub(super) fn validate(regions: &[RegionConfig], slots: &[SlotConfig], labels: &LabelConfig) -> Result<()> {
    check(!regions.is_empty() && regions.len() <= 64, || {
        format!("regions has {} entries; it needs 1..=64", regions.len())
    })?;
    check(slots.len() <= 256, || format!("segmentation has {} slots; at most 256", slots.len()))?;
    check_unique("regions", regions.iter().map(|r| r.key.as_str()))?;
    check_unique("segmentation", slots.iter().map(|s| s.key.as_str()))?;
    for (i, r) in regions.iter().enumerate() {
        check(slots.iter().any(|s| s.key == r.key), || {
            format!("regions[{i}].key (`{}`) has no segmentation slot of the same key", r.key)
        })?;
    }
    let mut ids: Vec<u32> = labels.table.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    check(ids.len() == labels.table.len(), || "labels.table has duplicate ids".to_string())?;
    check(!ids.contains(&0), || "labels.table: id 0 is the background and cannot name a class".to_string())?;
    check_unique("labels.table", labels.table.iter().map(|e| e.name.as_str()))?;
    check_unique("labels.slots", labels.slots.iter().map(|g| g.key.as_str()))?;
    check_unique("labels.organs", labels.organs.iter().map(|g| g.key.as_str()))?;
    for (i, s) in slots.iter().enumerate() {
        check(labels.slots.iter().any(|g| g.key == s.key), || {
            format!("segmentation[{i}] (`{}`) has no class group in labels.slots", s.key)
        })?;
    }
    for (i, g) in labels.slots.iter().enumerate() {
        check(!g.classes.is_empty(), || format!("labels.slots[{i}] (`{}`) lists no classes", g.key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label table for RadGenome-ChestCT region masks merged into one label map [INFERRED ids:
    /// the ten first-level regions in the order of SPEC §8.1, 1..=10]. It has no lobes, kidneys,
    /// liver or lesion classes, so those attributes come out "not assessed"; the lungs and the
    /// heart are measured from the `lung` and `heart` regions.
    fn radgenome_labels_in_code() -> LabelConfig {
        let names = [
            "abdomen",
            "bone",
            "breast",
            "esophagus",
            "heart",
            "lung",
            "mediastinum",
            "pleura",
            "thyroid",
            "trachea and bronchie",
        ];
        let table = names
            .iter()
            .enumerate()
            .map(|(i, n)| LabelEntry { id: i as u32 + 1, name: n.to_string() })
            .collect();
        let mut slots = default_slot_groups();
        for g in &mut slots {
            let classes: &[&str] = match g.key.as_str() {
                "lung" => &["lung", "pleura"],
                "large_airways" => &["trachea and bronchie"],
                "mediastinum" => &["mediastinum", "esophagus", "thyroid"],
                "heart_great_vessels" => &["heart"],
                "osseous" => &["bone"],
                "upper_abdomen" => &["abdomen"],
                _ => continue, // lesion slots keep their TotalSegmentator classes: absent here
            };
            *g = group(&g.key, classes, &[]);
        }
        let mut organs = default_organ_groups();
        for g in &mut organs {
            match g.key.as_str() {
                "lungs" => *g = group("lungs", &["lung"], &[]),
                "heart" => *g = group("heart", &["heart"], &[]),
                _ => {}
            }
        }
        LabelConfig { table, slots, organs, lobes: default_lobes() }
    }

    #[test]
    fn radgenome_json_is_the_in_code_table() {
        assert_eq!(LabelConfig::from_json(RADGENOME_JSON).unwrap(), radgenome_labels_in_code());
    }
}
