//! The result of `medregion eval`: overall and per-region scores of matched studies, rendered as
//! a markdown table or JSON.
//!
//! Overall scores every matched study on its merged text ([`Study::merged_text`]). Region `k`
//! scores the studies where both sides have `regions` (a study given only as `text` has no
//! region texts); a region both sides left empty still counts, and scores 0 on ROUGE-L and
//! METEOR (as the references do) and adds nothing to BLEU's counts.

use serde::Serialize;

use super::io::{Matched, Study, REGIONS};
use super::wordnet::WordNet;
use super::{aggregate, CorpusScores, Scorer};

/// Scores of one region.
#[derive(Clone, Debug, Serialize)]
pub struct RegionScores {
    pub region: &'static str,
    #[serde(flatten)]
    pub scores: CorpusScores,
}

/// What was scored and how.
#[derive(Clone, Debug, Serialize)]
pub struct EvalConfig {
    pub bleu: &'static str,
    pub bleu_nltk: &'static str,
    pub rouge_l: &'static str,
    pub meteor: &'static str,
    /// WordNet directory used by METEOR's synonym stage, or null when the stage is off.
    pub wordnet: Option<String>,
}

/// The evaluation of matched studies.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub matched: usize,
    /// Ids only in the predictions.
    pub pred_only: Vec<String>,
    /// Ids only in the references.
    pub ref_only: Vec<String>,
    pub overall: CorpusScores,
    /// Per-region scores, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<RegionScores>>,
    pub config: EvalConfig,
}

/// Scores matched studies: overall, and per region when `by_region`.
pub fn evaluate(matched: &Matched, wordnet: Option<&WordNet>, by_region: bool) -> Evaluation {
    let mut scorer = Scorer::new(wordnet);
    let overall: Vec<_> =
        matched.pairs.iter().map(|(p, r)| scorer.score_pair(&p.merged_text(), &r.merged_text())).collect();
    let regions = by_region.then(|| {
        REGIONS
            .iter()
            .enumerate()
            .map(|(k, &region)| {
                let scores: Vec<_> = matched
                    .pairs
                    .iter()
                    .filter_map(|(p, r): &(Study, Study)| Some((p.region(k)?, r.region(k)?)))
                    .map(|(p, r)| scorer.score_pair(p, r))
                    .collect();
                RegionScores { region, scores: aggregate(&scores) }
            })
            .collect()
    });
    Evaluation {
        matched: matched.pairs.len(),
        pred_only: matched.pred_only.clone(),
        ref_only: matched.ref_only.clone(),
        overall: aggregate(&overall),
        regions,
        config: EvalConfig {
            bleu: "sacrebleu corpus BLEU-n: BLEU(max_ngram_order=n), tokenizer 13a, smooth_method exp, case-sensitive",
            bleu_nltk: "nltk corpus_bleu, weights (1/n,)*n, no smoothing, on 13a tokens",
            rouge_l: "rouge-score rougeL (P, R, F), mean over studies; rouge_l_stem_* with use_stemmer=True",
            meteor: "nltk meteor_score on 13a tokens (alpha 0.9, beta 3, gamma 0.5; exact, Porter stem, \
                     WordNet synonyms when wordnet is set), mean over studies",
            wordnet: wordnet.map(|w| w.root().display().to_string()),
        },
    }
}

impl Evaluation {
    /// The markdown report: one table (regions, when scored, then overall) and notes.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| region | n | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | ROUGE-L | ROUGE-L (stem) | METEOR |\n",
        );
        s.push_str("|:--|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        let row = |s: &mut String, name: &str, c: &CorpusScores| {
            if c.n == 0 {
                s.push_str(&format!("| {name} | 0 | – | – | – | – | – | – | – |\n"));
                return;
            }
            s.push_str(&format!(
                "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |\n",
                c.n, c.bleu[0], c.bleu[1], c.bleu[2], c.bleu[3], c.rouge_l_f, c.rouge_l_stem_f, c.meteor
            ));
        };
        if let Some(regions) = &self.regions {
            for r in regions {
                row(&mut s, r.region, &r.scores);
            }
        }
        row(&mut s, "**overall**", &self.overall);
        s.push('\n');
        s.push_str(
            "BLEU-n: sacreBLEU corpus BLEU up to n-grams (13a tokens, exp smoothing). \
             ROUGE-L: rouge-score F-measure, mean over studies. \
             METEOR: nltk meteor_score on 13a tokens, mean over studies, ",
        );
        match &self.config.wordnet {
            Some(dir) => s.push_str(&format!("synonyms from WordNet at {dir}.\n")),
            None => s.push_str("exact + stem matching only (no WordNet: synonym stage off).\n"),
        }
        s.push_str(&format!("\nMatched {} studies.", self.matched));
        if self.pred_only.is_empty() && self.ref_only.is_empty() {
            s.push_str(" Every id matched.\n");
        } else {
            s.push('\n');
            for (side, ids) in [("--pred", &self.pred_only), ("--ref", &self.ref_only)] {
                if !ids.is_empty() {
                    s.push_str(&format!(
                        "Unmatched: {} id(s) only in {side}: {}\n",
                        ids.len(),
                        ids.join(", ")
                    ));
                }
            }
        }
        s
    }

    /// The JSON report (what `--json` writes), pretty-printed.
    pub fn to_json(&self) -> crate::Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| crate::Error::Internal(format!("eval JSON: {e}")))
    }
}
