//! The prompt text block (SPEC §7) rendered from an [`Attributes`] document with the templates
//! of `AttributeConfig::text`. Lines always appear, in a fixed order: header, lungs, heart,
//! liver, kidneys, nodules, effusion, cysts. A value whose mask is missing reads `not assessed`;
//! a lesion kind that was assessed and found nothing reads `none detected`.

use super::{Attributes, Lesion, LesionFinding, Status};
use crate::model::config::AttributeConfig;

/// Replaces each `{key}` of `template` by its value (one pass, so values are never re-read).
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| {
            let key = &after[..close];
            values.iter().find(|(k, _)| *k == key).map(|(_, v)| (v, close))
        });
        match hit {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

struct Render<'a> {
    doc: &'a Attributes,
    c: &'a AttributeConfig,
}

impl Render<'_> {
    fn ml(&self, v: f64) -> String {
        format!("{:.*} mL", self.c.volume_decimals as usize, v)
    }

    fn mm(&self, v: f64) -> String {
        format!("{:.*} mm", self.c.diameter_decimals as usize, v)
    }

    fn organ(&self, key: &str) -> String {
        self.doc
            .organs
            .iter()
            .find(|o| o.key == key)
            .and_then(|o| o.volume_ml)
            .map(|v| self.ml(v))
            .unwrap_or_else(|| self.c.text.not_assessed.clone())
    }

    fn side(&self, side: Option<&str>) -> String {
        match side {
            Some("right") => self.c.text.right.clone(),
            Some("left") => self.c.text.left.clone(),
            _ => self.c.text.not_assessed.clone(),
        }
    }

    fn location(&self, l: &Lesion) -> String {
        let t = &self.c.text;
        match (l.location.method.as_str(), &l.location.lobe_phrase) {
            ("contact" | "nearest", Some(phrase)) => fill(&t.in_lobe, &[("lobe", phrase.clone())]),
            ("none", _) => t.outside_lungs.clone(),
            _ => t.location_not_assessed.clone(),
        }
    }

    /// `none_text` / `not_assessed` / the items joined by the separator.
    fn findings(&self, f: &LesionFinding, items: Vec<String>) -> String {
        if f.status == Status::NotAssessed {
            return self.c.text.not_assessed.clone();
        }
        if f.count == 0 {
            return self.c.none_text.clone();
        }
        items.join(&self.c.text.separator)
    }

    /// The count, the first `max_lesions_listed` lesions, and how many more.
    fn listed(&self, f: &LesionFinding, item: impl Fn(usize, &Lesion) -> String) -> Vec<String> {
        let t = &self.c.text;
        let shown = f.lesions.len().min(self.c.max_lesions_listed);
        let mut items = vec![fill(&t.count, &[("count", f.count.to_string())])];
        items.extend(f.lesions.iter().take(shown).enumerate().map(|(i, l)| item(i, l)));
        if f.count > shown {
            items.push(fill(&t.more, &[("count", (f.count - shown).to_string())]));
        }
        items
    }

    fn text(&self) -> String {
        let (c, t) = (self.c, &self.c.text);
        let kind = |k: &str| self.doc.lesions.iter().find(|f| f.kind == k);
        let mut lines = vec![c.header.clone()];
        lines.push(fill(
            &t.lungs,
            &[
                ("total", self.organ("lungs")),
                ("right", self.organ("lung_right")),
                ("left", self.organ("lung_left")),
            ],
        ));
        lines.push(fill(&t.heart, &[("volume", self.organ("heart"))]));
        lines.push(fill(&t.liver, &[("volume", self.organ("liver"))]));
        lines.push(fill(
            &t.kidneys,
            &[("right", self.organ("kidney_right")), ("left", self.organ("kidney_left"))],
        ));
        let findings = |key: &str, build: &dyn Fn(&LesionFinding) -> Vec<String>| match kind(key) {
            Some(f) => self.findings(f, build(f)),
            None => t.not_assessed.clone(),
        };
        let nodules = findings("lung_nodule", &|f| {
            self.listed(f, |i, l| {
                let template = if i == 0 { &t.first_nodule } else { &t.nodule };
                fill(
                    template,
                    &[("diameter", self.mm(l.longest_diameter_mm)), ("location", self.location(l))],
                )
            })
        });
        lines.push(fill(&t.nodules, &[("findings", nodules)]));
        let effusion = findings("pleural_effusion", &|f| {
            f.sides
                .iter()
                .map(|s| {
                    fill(
                        &t.effusion_side,
                        &[
                            ("side", self.side(Some(&s.side))),
                            ("volume", self.ml(s.volume_ml)),
                            ("grade", s.grade.clone()),
                        ],
                    )
                })
                .collect()
        });
        lines.push(fill(&t.effusion, &[("findings", effusion)]));
        let cysts = findings("kidney_cyst", &|f| {
            self.listed(f, |_, l| {
                fill(
                    &t.cyst,
                    &[
                        ("diameter", self.mm(l.longest_diameter_mm)),
                        ("side", self.side(l.location.side.as_deref())),
                    ],
                )
            })
        });
        lines.push(fill(&t.cysts, &[("findings", cysts)]));
        lines.join("\n")
    }
}

/// The text block for `doc` (without a trailing newline).
pub fn render(doc: &Attributes, config: &AttributeConfig) -> String {
    Render { doc, c: config }.text()
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn fill_replaces_known_keys_once() {
        let v = [("a", "{b}".to_string()), ("b", "x".to_string())];
        assert_eq!(fill("<{a}|{b}|{c}>", &v), "<{b}|x|{c}>");
        assert_eq!(fill("{", &v), "{");
    }
}
