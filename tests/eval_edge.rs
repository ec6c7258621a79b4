//! Edge cases of `medregion::eval` (the reference values are in the parity fixtures; here: the
//! boundary behaviour and that nothing panics), and the input reader.

use std::path::PathBuf;

use medregion::eval::{self, bleu::BleuStats, io, meteor_score, rouge, tokenize, Scorer, WordNet, REGIONS};
use medregion::Error;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medregion-eval-edge-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn empty_sides_score_zero() {
    let mut s = Scorer::new(None);
    for (p, r) in [("", "The heart is normal."), ("The heart is normal.", ""), ("", ""), (" \n\t", "lung")] {
        let ps = s.score_pair(p, r);
        assert_eq!(ps.rouge_l, rouge::RougeScore::default(), "{p:?} {r:?}");
        assert_eq!(ps.meteor, 0.0);
        let c = eval::aggregate(&[ps]);
        assert_eq!(c.bleu, [0.0; 4]);
        assert_eq!(c.bleu_nltk, [0.0; 4]);
    }
    let c = eval::aggregate(&[]);
    assert_eq!(c.n, 0);
    assert_eq!(c.bleu, [0.0; 4]);
}

#[test]
fn one_word_reference() {
    let mut s = Scorer::new(None);
    let c = s.score_corpus([("Normal", "Normal")]);
    assert!((c.bleu[0] - 1.0).abs() < 1e-12);
    // sacrebleu: no bigram at all ends the precision loop, so BLEU-2..4 are 0.
    assert_eq!(c.bleu[1], 0.0);
    assert!((c.rouge_l_f - 1.0).abs() < 1e-12);
    // METEOR of one matched word: Fmean 1, one chunk per match: penalty 0.5.
    assert!((c.meteor - 0.5).abs() < 1e-12);
}

#[test]
fn identical_long_report_is_perfect_and_fast_enough() {
    let sentence = "Small bilateral pleural effusions, right greater than left, with adjacent atelectasis. ";
    let text = sentence.repeat(2000); // ~170 kB, 24k tokens
    let t = std::time::Instant::now();
    let mut s = Scorer::new(None);
    let c = s.score_corpus([(&text, &text)]);
    for k in 0..4 {
        assert!((c.bleu[k] - 1.0).abs() < 1e-9);
    }
    assert!((c.rouge_l_f - 1.0).abs() < 1e-12);
    assert!(c.meteor > 0.99);
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
}

#[test]
fn unicode_and_control_characters_do_not_panic() {
    let nasty = [
        "\u{0}\u{1}\u{1c}\u{1f}\u{7f}\u{85}\u{a0}\u{2028}\u{feff}",
        "İıŞşĞğ ΣΊΣΥΦΟΣ ß ẞ ﬁ K Ⅻ １２ e\u{301} 😀👍🏽 中文 العربية",
        "&amp;&quot;&lt;&gt;&amp;amp;<skipped>-\n-\n\n",
        ".,.,.,1.2.3-4-5--..",
        "\u{10FFFF}\u{E000}",
    ];
    let mut s = Scorer::new(None);
    for a in nasty {
        for b in nasty {
            let p = s.score_pair(a, b);
            assert!(p.meteor.is_finite() && (0.0..=1.0).contains(&p.meteor));
            assert!((0.0..=1.0).contains(&p.rouge_l.fmeasure));
        }
    }
    let c = s.score_corpus(nasty.iter().zip(nasty.iter().rev()));
    for v in c.bleu.iter().chain(&c.bleu_nltk) {
        assert!(v.is_finite() && (0.0..=1.0).contains(v));
    }
    assert_eq!(tokenize::tokenize_13a("ΣΊΣΥΦΟΣ."), "ΣΊΣΥΦΟΣ .");
}

#[test]
fn bleu_variants_differ_as_documented() {
    // No 4-gram match: sacrebleu's exp smoothing keeps BLEU-4 positive, nltk's is ~0.
    let st =
        BleuStats::from_text("the heart is large and the lungs", "the heart is big and the lungs are clear");
    assert_eq!(st.correct[3], 0);
    assert!(st.sacrebleu(4) > 0.1);
    assert!(st.nltk(4) < 1e-60);
    assert!(st.nltk(4) > 0.0);
    assert!((st.nltk(1) - st.sacrebleu(1)).abs() < 1e-12);
}

#[test]
fn meteor_is_case_insensitive_and_stems() {
    // "small" exact, "Effusions"~"effusion" by stem, "ARE"/"is" unmatched: P = R = 2/3, two
    // chunks → penalty 0.5 → 1/3 (nltk gives 0.3333333333333333).
    let s = meteor_score(&["Effusions", "ARE", "small"], &["effusion", "is", "small"], None);
    assert!((s - 1.0 / 3.0).abs() < 1e-12, "{s}");
}

#[test]
fn jsonl_formats_and_merged_text() {
    let dir = scratch("formats");
    let f = dir.join("in.jsonl");
    std::fs::write(
        &f,
        concat!(
            "{\"id\": \"a\", \"text\": \"merged a\"}\n",
            "\n",
            "{\"id\": 7, \"regions\": {\"lung\": {\"text\": \"clear lungs\", \"score\": 1}, \"osseous\": \"no fracture\", \"upper_abdomen\": null}}\n",
            "{\"id\": \"c\", \"regions\": {\"large_airways\": \"patent\"}, \"text\": \"given merged\"}\n",
        ),
    )
    .unwrap();
    let studies = eval::read_studies(&f).unwrap();
    assert_eq!(studies.len(), 3);
    assert_eq!(studies[0].merged_text(), "merged a");
    assert!(studies[0].regions.is_none());
    assert_eq!(studies[1].id, "7");
    assert_eq!(studies[1].region(0), Some("clear lungs"));
    assert_eq!(studies[1].region(1), Some(""));
    assert_eq!(studies[1].merged_text(), "clear lungs no fracture");
    assert_eq!(studies[2].region(REGIONS.iter().position(|r| *r == "airways").unwrap()), Some("patent"));
    assert_eq!(studies[2].merged_text(), "given merged");
    assert_eq!(studies[1].source, format!("{}:3", f.display()));
}

#[test]
fn malformed_lines_name_file_and_line() {
    let dir = scratch("malformed");
    let cases = [
        ("{\"id\": \"a\", \"text\": \"x\"}\n{not json\n", ":2", "invalid JSON"),
        ("{\"text\": \"x\"}\n", ":1", "missing `id`"),
        ("{\"id\": \"a\"}\n", ":1", "neither"),
        ("{\"id\": \"a\", \"text\": 3}\n", ":1", "`text` must be a string"),
        ("{\"id\": \"a\", \"regions\": {\"liver\": \"x\"}}\n", ":1", "unknown region `liver`"),
        ("{\"id\": \"a\", \"regions\": {\"lung\": [1]}}\n", ":1", "regions.lung"),
        ("[1, 2]\n", ":1", "expected a JSON object"),
        ("{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n", ":2", "duplicate id `a`"),
        (
            "{\"id\": \"a\", \"regions\": {\"airways\": \"x\", \"large_airways\": \"y\"}}\n",
            ":1",
            "given twice",
        ),
    ];
    for (i, (content, line, reason)) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}.jsonl"));
        std::fs::write(&f, content).unwrap();
        let err = eval::read_studies(&f).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("bad{i}.jsonl{line}")), "{msg}");
        assert!(msg.contains(reason), "{msg}");
    }
    let f = dir.join("binary.jsonl");
    std::fs::write(&f, [0xff, 0xfe, b'\n']).unwrap();
    assert!(eval::read_studies(&f).unwrap_err().to_string().contains("binary.jsonl:1"));
    let missing = eval::read_studies(dir.join("nope.jsonl")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }));
}

#[test]
fn directory_of_reports_and_matching() {
    let dir = scratch("reports");
    std::fs::write(
        dir.join("s1.json"),
        "{\"id\": \"s1\", \"regions\": {\"lung\": {\"text\": \"ok\"}}, \"text\": \"ok\"}",
    )
    .unwrap();
    std::fs::write(dir.join("s2.json"), "{\n  \"regions\": {\"lung\": \"fine\"}\n}\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let preds = eval::read_studies(&dir).unwrap();
    assert_eq!(preds.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s1", "s2"]);
    let refs = vec![
        io::Study { id: "s2".into(), text: Some("fine".into()), regions: None, source: "x".into() },
        io::Study { id: "s3".into(), text: Some("x".into()), regions: None, source: "x".into() },
    ];
    let m = eval::match_studies(preds, refs);
    assert_eq!(m.pairs.len(), 1);
    assert_eq!(m.pairs[0].0.id, "s2");
    assert_eq!(m.pred_only, ["s1"]);
    assert_eq!(m.ref_only, ["s3"]);
    let e = eval::evaluate(&m, None, true);
    let regions = e.regions.as_ref().unwrap();
    assert_eq!(regions.len(), 6);
    // The reference has no regions: no region is scored for this study.
    assert!(regions.iter().all(|r| r.scores.n == 0));
    assert_eq!(e.overall.n, 1);
    assert!(e.to_markdown().contains("only in --pred: s1"));
}

#[test]
fn wordnet_reader_on_a_tiny_database() {
    let dir = scratch("wordnet");
    let line0 = "00000000 03 n 02 Big 0 large(a) 0 000 | of great size\n";
    let line1 = format!("{:08} 03 n 01 goose 0 001 @ 00000000 n 0000 | a bird\n", line0.len());
    std::fs::write(dir.join("data.noun"), format!("{line0}{line1}")).unwrap();
    std::fs::write(
        dir.join("index.noun"),
        format!(
            "  1 licence header line\nbig n 1 0 1 0 00000000  \ngoose n 1 1 @ 1 0 {:08}  \n",
            line0.len()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("noun.exc"), "geese goose\n").unwrap();
    for f in [
        "data.verb",
        "data.adj",
        "data.adv",
        "index.verb",
        "index.adj",
        "index.adv",
        "verb.exc",
        "adj.exc",
        "adv.exc",
    ] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let wn = WordNet::open(&dir).unwrap();
    assert_eq!(wn.synonyms("big"), ["Big", "large"]);
    assert_eq!(wn.synonyms("BIGS"), ["Big", "large"]); // lowercased, noun rule s -> ""
    assert_eq!(wn.synonyms("geese"), ["goose"]); // exception list
    assert!(wn.synonyms("small").is_empty());

    // An index offset that does not start a synset line is an error naming the files.
    std::fs::write(dir.join("index.noun"), "big n 1 0 1 0 00000003  \n").unwrap();
    let err = WordNet::open(&dir).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("data.noun") && err.to_string().contains("index.noun:1"), "{err}");
    std::fs::write(dir.join("index.noun"), "big n 1 0 1 0 0000000x  \n").unwrap();
    assert!(WordNet::open(&dir).unwrap_err().to_string().contains("index.noun:1"));
    std::fs::remove_file(dir.join("verb.exc")).unwrap();
    assert!(matches!(WordNet::open(&dir).unwrap_err(), Error::Io { .. } | Error::Format { .. }));
    assert!(WordNet::open(dir.join("missing")).is_err());
}
