//! Speed of the report-quality metrics (`medregion::eval`) on 10,000 report pairs, one core.
//!
//! The pairs are the parity fixtures' radiology reports (tests/fixtures/eval/pairs.jsonl, short
//! edited pairs only, repeated to 10,000), so lengths and vocabulary are those of real reports.
//! Each metric is timed on its own, from raw text (tokenization included), plus all metrics
//! together as `medregion eval` computes them. Run: `cargo bench --bench eval`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medregion::eval::{bleu::BleuStats, meteor::Meteor, porter::StemCache, rouge, tokenize, Scorer, WordNet};

const N_PAIRS: usize = 10_000;

fn load_pairs() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/eval/pairs.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let base: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] != "long")
        .filter_map(|v| Some((v["pred"].as_str()?.to_string(), v["ref"].as_str()?.to_string())))
        .collect();
    let base = if base.is_empty() {
        vec![("The heart is mildly enlarged.".to_string(), "Heart size is mildly enlarged.".to_string())]
    } else {
        base
    };
    base.iter().cycle().take(N_PAIRS).cloned().collect()
}

fn bench_metrics(c: &mut Criterion) {
    let pairs = load_pairs();
    let words: usize =
        pairs.iter().map(|(p, r)| p.split_whitespace().count() + r.split_whitespace().count()).sum();
    eprintln!(
        "eval bench: {} pairs, {:.1} words per report on average",
        pairs.len(),
        words as f64 / (2 * pairs.len()) as f64
    );

    let mut g = c.benchmark_group("eval_10k_pairs");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(pairs.len() as u64));

    g.bench_function("bleu_1_4", |b| {
        b.iter(|| {
            let mut st = BleuStats::default();
            for (p, r) in &pairs {
                st.add(&BleuStats::from_text(p, r));
            }
            st.scores()
        })
    });
    g.bench_function("rouge_l", |b| {
        b.iter(|| pairs.iter().map(|(p, r)| rouge::rouge_l(r, p, false).fmeasure).sum::<f64>())
    });
    g.bench_function("rouge_l_stem", |b| {
        b.iter(|| {
            let mut stems = StemCache::default();
            pairs
                .iter()
                .map(|(p, r)| {
                    let tp = tokenize::tokenize_rouge(p, Some(&mut stems));
                    let tr = tokenize::tokenize_rouge(r, Some(&mut stems));
                    rouge::rouge_l_tokens(&tr, &tp).fmeasure
                })
                .sum::<f64>()
        })
    });
    g.bench_function("meteor", |b| {
        b.iter(|| {
            let mut m = Meteor::new(None);
            pairs
                .iter()
                .map(|(p, r)| {
                    let (tp, tr) = (tokenize::tokenize_13a(p), tokenize::tokenize_13a(r));
                    m.score(&tokenize::words(&tp), &tokenize::words(&tr))
                })
                .sum::<f64>()
        })
    });
    // With synonyms when a WordNet database is given ($MEDREGION_WORDNET).
    if let Ok(Some(wn)) = WordNet::from_env() {
        g.bench_function("meteor_wordnet", |b| {
            b.iter(|| {
                let mut m = Meteor::new(Some(&wn));
                pairs
                    .iter()
                    .map(|(p, r)| {
                        let (tp, tr) = (tokenize::tokenize_13a(p), tokenize::tokenize_13a(r));
                        m.score(&tokenize::words(&tp), &tokenize::words(&tr))
                    })
                    .sum::<f64>()
            })
        });
    }
    g.bench_function("all_metrics", |b| {
        b.iter(|| Scorer::new(None).score_corpus(pairs.iter().map(|(p, r)| (p, r))))
    });
    g.finish();
}

criterion_group!(benches, bench_metrics);
criterion_main!(benches);
