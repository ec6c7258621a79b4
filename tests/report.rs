//! The end-to-end pipeline on the tiny synthetic package and the chest phantom: six region
//! reports, reproducible across runs and thread counts, events in stage order, cancellation.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::phantom::chest_phantom;
use medregion::report::{generate_report, Event, Report, ReportOptions, Stage};
use medregion::tensor::WeightType;
use medregion::Error;

/// The tiny package, one file per test (tests run in parallel).
fn tiny(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{test}.mrm"));
    if !path.exists() {
        write_synthetic(&path, Preset::Tiny, 11, QuantPolicy::all(WeightType::F32)).unwrap();
    }
    path
}

fn run(threads: usize, events: &mut Vec<String>) -> medregion::Result<Report> {
    run_with(threads, None, events)
}

fn run_with(threads: usize, batch: Option<bool>, events: &mut Vec<String>) -> medregion::Result<Report> {
    let model = Model::load(tiny("reproducible"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let options =
        ReportOptions { max_new_tokens: Some(12), threads, batch_regions: batch, ..ReportOptions::default() };
    generate_report(&model, &p.ct, &masks, &options, &mut |e: &Event<'_>| {
        match e {
            Event::Stage { stage, region, .. } => events.push(format!("{stage:?}:{}", region.unwrap_or(""))),
            Event::Token { region, .. } => {
                if events.last().map(|l| !l.starts_with("token")).unwrap_or(true) {
                    events.push(format!("token:{region}"));
                }
            }
        }
        ControlFlow::Continue(())
    })
}

fn without_timings(mut r: Report) -> Report {
    r.timings = Default::default();
    r
}

#[test]
fn report_is_complete_and_reproducible_across_threads() {
    let mut events = Vec::new();
    let one = run(1, &mut events).unwrap();
    assert_eq!(one.regions.len(), 6);
    let keys: Vec<&str> = one.regions.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["lung", "large_airways", "mediastinum", "heart_great_vessels", "osseous", "upper_abdomen"]
    );
    for r in &one.regions {
        assert!(r.tokens >= 1 && r.tokens <= 12, "{r:?}");
        assert!(r.prompt_tokens > 16, "{r:?}");
        assert_eq!(r.slices.len(), 2);
    }
    // The phantom has lungs, an airway, a heart, bones and abdominal organs; the mediastinum
    // class (a TotalSegmentator subtask) is not drawn.
    assert!(one.study.missing_structures.contains(&"mediastinum".to_string()), "{:?}", one.study);
    assert!(!one.study.missing_structures.contains(&"lung".to_string()));
    assert_eq!(one.attributes.lesions.iter().find(|l| l.kind == "lung_nodule").unwrap().count, 2);
    assert_eq!(one.study.preprocessed_shape, [8, 56, 56]);
    let merged: Vec<&str> = one.regions.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(one.text, merged.join("\n\n"));
    // Stage order: preprocess, attributes, encoder, tokens, then each region with its tokens.
    assert_eq!(&events[..4], ["Preprocess:", "Attributes:", "Encoder:", "Tokens:"]);
    assert_eq!(events[4], "Region:lung");
    assert!(events.iter().filter(|e| e.starts_with("Region:")).count() == 6);

    let again = run(1, &mut Vec::new()).unwrap();
    let two = run(2, &mut Vec::new()).unwrap();
    let json = |r: Report| serde_json::to_string(&without_timings(r)).unwrap();
    let base = json(one);
    assert_eq!(base, json(again), "same input, same output");
    assert_eq!(base, json(two), "thread count changed the report");
    // Decoding the six regions one by one gives the same report as the batch (the default).
    let mut seq_events = Vec::new();
    let sequential = run_with(1, Some(false), &mut seq_events).unwrap();
    assert_eq!(base, json(sequential), "batched and sequential decoding differ");
    assert_eq!(seq_events[5], "token:lung", "sequential: tokens follow their region's stage");
}

#[test]
fn cancelling_from_the_callback_stops_promptly() {
    let model = Model::load(tiny("cancel"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let options = ReportOptions { max_new_tokens: Some(50), threads: 1, ..ReportOptions::default() };
    let mut tokens_seen = 0;
    let r = generate_report(&model, &p.ct, &masks, &options, &mut |e: &Event<'_>| match e {
        Event::Token { .. } => {
            tokens_seen += 1;
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(tokens_seen, 1, "no token after the cancel");
    // Cancelling at a stage boundary works too.
    let r = generate_report(&model, &p.ct, &masks, &options, &mut |e: &Event<'_>| match e {
        Event::Stage { stage: Stage::Encoder, .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    assert!(matches!(r, Err(Error::Cancelled)));
}

#[test]
fn bad_options_are_clear_errors() {
    let model = Model::load(tiny("bad"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let go = |o: ReportOptions| {
        generate_report(&model, &p.ct, &masks, &o, &mut |_: &Event<'_>| ControlFlow::Continue(()))
            .unwrap_err()
            .to_string()
    };
    let e = go(ReportOptions { regions: Some(vec!["spleen".into()]), ..Default::default() });
    assert!(e.contains("`spleen`"), "{e}");
    let e = go(ReportOptions { regions: Some(vec![]), ..Default::default() });
    assert!(e.contains("no region"), "{e}");
    let e = go(ReportOptions { max_new_tokens: Some(0), ..Default::default() });
    assert!(e.contains("max_new_tokens"), "{e}");
}
