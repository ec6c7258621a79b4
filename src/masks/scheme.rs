//! Label schemes: a label table (label-map value → class name) plus the class groups of the
//! segmentation slots, measured organs and lobes ([`LabelConfig`]), and the tables shipped as
//! data under `data/labels/` (SPEC-model.md §8.1, §8.3).
//!
//! | name (`--labels`, [`LabelScheme::from_arg`]) | table | groups |
//! |---|---|---|
//! | `totalseg` | TotalSegmentator v2 `total`, ids 1..=117, plus the subtask classes packed at 118..=122 (`lung_nodules`, `pleural_effusion`, `lung_airways`, `mediastinum`, `pericardial_effusion`) for a merged map | the defaults (SPEC §8.3) |
//! | `totalseg:lung_nodules` | {1 lung, 2 lung_nodules} | the defaults |
//! | `totalseg:pleural_pericard_effusion` | {1 lung_pleural, 2 pleural_effusion, 3 pericardial_effusion} | the defaults |
//! | `totalseg:kidney_cysts` | {1 kidney_cyst_left, 2 kidney_cyst_right} | the defaults |
//! | `radgenome` | the ten RadGenome-ChestCT regions, ids 1..=10 | SPEC §8.1 |
//! | anything else | a JSON file read by [`LabelConfig::from_json`] | its own, else the defaults |
//!
//! The names win over files: a file literally named `totalseg` is given as `./totalseg`.

use crate::error::{Error, Result};
use crate::model::config::{radgenome_labels, LabelConfig, LabelEntry};

/// TotalSegmentator v2 `total` (117 classes) [CONFIRMED, SPEC §8.3 and `map_to_binary.py`].
pub const TOTALSEG_TOTAL_JSON: &str = include_str!("../../data/labels/totalseg_total.json");

/// The TotalSegmentator subtasks with a shipped table, and their JSON.
pub const TOTALSEG_SUBTASKS: [(&str, &str); 3] = [
    ("lung_nodules", include_str!("../../data/labels/totalseg_lung_nodules.json")),
    ("pleural_pericard_effusion", include_str!("../../data/labels/totalseg_pleural_pericard_effusion.json")),
    ("kidney_cysts", include_str!("../../data/labels/totalseg_kidney_cysts.json")),
];

/// Which label table to use, and how its classes make slots and organs.
#[derive(Clone, Debug)]
pub struct LabelScheme {
    /// Reported as `label_table` (`totalseg`, `totalseg:lung_nodules`, `radgenome`, a file name).
    pub name: String,
    pub labels: LabelConfig,
}

/// A shipped table (its JSON is checked by the unit tests, so parsing cannot fail).
fn shipped(json: &str) -> LabelConfig {
    LabelConfig::from_json(json).unwrap_or_default()
}

/// Every class name of the shipped tables (the "known structures").
fn builtin_class_names() -> Vec<String> {
    let mut names: Vec<String> = shipped(TOTALSEG_TOTAL_JSON).table.into_iter().map(|e| e.name).collect();
    for (_, json) in TOTALSEG_SUBTASKS {
        names.extend(shipped(json).table.into_iter().map(|e| e.name));
    }
    names.extend(LabelConfig::default().table.into_iter().map(|e| e.name));
    names.extend(radgenome_labels().table.into_iter().map(|e| e.name));
    names.sort();
    names.dedup();
    names
}

impl LabelScheme {
    /// TotalSegmentator v2: the full `total` table (ids 1..=117) plus the subtask classes at
    /// the ids of the model config's default table (118..=122), with the default groups. Every
    /// id of [`LabelConfig::default`]'s table names the same class here.
    pub fn totalseg() -> LabelScheme {
        let default = LabelConfig::default();
        let mut table: Vec<LabelEntry> = shipped(TOTALSEG_TOTAL_JSON).table;
        for e in &default.table {
            if !table.iter().any(|t| t.id == e.id) {
                table.push(e.clone());
            }
        }
        LabelScheme { name: "totalseg".into(), labels: LabelConfig { table, ..default } }
    }

    /// A TotalSegmentator subtask's own label map (`lung_nodules`, `pleural_pericard_effusion`,
    /// `kidney_cysts`), with the default groups.
    pub fn totalseg_subtask(task: &str) -> Result<LabelScheme> {
        let (_, json) = TOTALSEG_SUBTASKS.iter().find(|(t, _)| *t == task).ok_or_else(|| {
            let known: Vec<&str> = TOTALSEG_SUBTASKS.iter().map(|(t, _)| *t).collect();
            Error::invalid(
                "label table",
                format!("`totalseg:{task}`: no such subtask table (known: {})", known.join(", ")),
            )
        })?;
        Ok(LabelScheme { name: format!("totalseg:{task}"), labels: shipped(json) })
    }

    /// RadGenome-ChestCT merged regions (see `radgenome_labels`).
    pub fn radgenome() -> LabelScheme {
        LabelScheme { name: "radgenome".into(), labels: radgenome_labels() }
    }

    /// A JSON label configuration ([`LabelConfig::from_json`]) whose groups may only name
    /// classes of its own table or of a shipped one ([`LabelScheme::check_known_classes`]).
    pub fn from_json(name: &str, json: &str) -> Result<LabelScheme> {
        let scheme = LabelScheme { name: name.to_string(), labels: LabelConfig::from_json(json)? };
        scheme.check_known_classes()?;
        Ok(scheme)
    }

    /// `totalseg`, `totalseg:<subtask>`, `radgenome`, or the path of a JSON label file (see
    /// the module doc). Every CLI command reads `--labels` with this.
    pub fn from_arg(arg: &str) -> Result<LabelScheme> {
        match arg {
            "totalseg" => Ok(LabelScheme::totalseg()),
            "radgenome" => Ok(LabelScheme::radgenome()),
            _ => match arg.strip_prefix("totalseg:") {
                Some(task) => LabelScheme::totalseg_subtask(task),
                None => {
                    let text = std::fs::read_to_string(arg).map_err(|e| Error::io(arg, e))?;
                    LabelScheme::from_json(arg, &text)
                }
            },
        }
    }

    /// Refuses a scheme whose slot, organ or lobe groups name a class that is neither in its
    /// own table nor in any shipped table (a typo, or a structure nothing can provide).
    pub fn check_known_classes(&self) -> Result<()> {
        let l = &self.labels;
        let mut builtin: Option<Vec<String>> = None;
        let mut check = |field: &str, key: &str, class: &str| -> Result<()> {
            if l.table.iter().any(|e| e.name == class) {
                return Ok(());
            }
            let names = builtin.get_or_insert_with(builtin_class_names);
            if names.binary_search_by(|n| n.as_str().cmp(class)).is_ok() {
                return Ok(());
            }
            Err(Error::format(
                format!("label table `{}`", self.name),
                format!(
                    "{field} `{key}` names the class `{class}`, which is in no label table (neither this \
                     one nor the built-in TotalSegmentator and RadGenome tables)"
                ),
            ))
        };
        for (field, groups) in [("labels.slots", &l.slots), ("labels.organs", &l.organs)] {
            for g in groups {
                for c in g.classes.iter().chain(&g.exclude) {
                    check(field, &g.key, c)?;
                }
            }
        }
        for lobe in &l.lobes {
            check("labels.lobes", &lobe.phrase, &lobe.class)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_tables_parse_and_agree_with_the_default_ids() {
        let total = LabelConfig::from_json(TOTALSEG_TOTAL_JSON).unwrap();
        assert_eq!(total.table.len(), 117);
        assert!(total.table.iter().enumerate().all(|(i, e)| e.id == i as u32 + 1));
        for (task, json) in TOTALSEG_SUBTASKS {
            let t = LabelConfig::from_json(json).unwrap();
            assert!(!t.table.is_empty(), "{task}");
        }
        let ts = LabelScheme::totalseg();
        for e in &LabelConfig::default().table {
            assert_eq!(ts.labels.id_of(&e.name), Some(e.id), "{}", e.name);
        }
        assert_eq!(ts.labels.table.len(), 117 + 5);
        ts.check_known_classes().unwrap();
        LabelScheme::radgenome().check_known_classes().unwrap();
    }

    #[test]
    fn arg_names() {
        assert_eq!(
            LabelScheme::from_arg("totalseg:kidney_cysts").unwrap().labels.id_of("kidney_cyst_right"),
            Some(2)
        );
        assert!(LabelScheme::from_arg("totalseg:nope").unwrap_err().to_string().contains("kidney_cysts"));
        assert_eq!(LabelScheme::from_arg("radgenome").unwrap().labels.table.len(), 10);
    }
}
