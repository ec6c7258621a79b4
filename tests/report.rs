//! The end-to-end pipeline on the tiny synthetic package and the chest phantom: six region
//! reports, reproducible across runs and thread counts, events in stage order, cancellation.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::llm::{Activations, Input, Session, SessionOptions};
use medregion::masks::Masks;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::phantom::chest_phantom;
use medregion::report::{generate_report, generate_report_in, Event, Report, ReportOptions, Stage};
use medregion::tensor::WeightType;
use medregion::tokenizer::Tokenizer;
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
            Event::Progress { stage, done, total } => events.push(format!("{stage:?}:{done}/{total}")),
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
    // The encoder reports its progress after each batch of slices (8 slices, one batch).
    assert_eq!(&events[..5], ["Preprocess:", "Attributes:", "Encoder:", "Encoder:8/8", "Tokens:"]);
    assert_eq!(events[5], "Region:lung");
    assert!(events.iter().filter(|e| e.starts_with("Region:")).count() == 6);

    let again = run(1, &mut Vec::new()).unwrap();
    let two = run(2, &mut Vec::new()).unwrap();
    let four = run(4, &mut Vec::new()).unwrap();
    let json = |r: Report| serde_json::to_string(&without_timings(r)).unwrap();
    let base = json(one);
    assert_eq!(base, json(again), "same input, same output");
    assert_eq!(base, json(two), "thread count changed the report (2)");
    assert_eq!(base, json(four), "thread count changed the report (4)");
    // Decoding the six regions one by one gives the same report as the batch (the default).
    let mut seq_events = Vec::new();
    let sequential = run_with(1, Some(false), &mut seq_events).unwrap();
    assert_eq!(base, json(sequential), "batched and sequential decoding differ");
    assert_eq!(seq_events[6], "token:lung", "sequential: tokens follow their region's stage");
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

#[test]
fn report_in_a_caller_session_matches_and_names_the_model() {
    let model = Model::load(tiny("session"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let options = ReportOptions { max_new_tokens: Some(8), threads: 2, ..ReportOptions::default() };
    let none = &mut |_: &Event<'_>| ControlFlow::Continue(());
    let own = generate_report(&model, &p.ct, &masks, &options, none).unwrap();
    assert_eq!(own.model_checksum, model.checksum());
    assert!(own.model_checksum.starts_with("sha256:"));
    let text = own.to_text();
    for r in &own.regions {
        assert!(text.contains(&format!("\n{}:\n{}\n", r.header, r.text)), "{text}");
    }
    assert!(text.starts_with(own.attributes.text.trim_end()));
    let json: serde_json::Value = serde_json::from_str(&own.to_json().unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["regions"].as_array().unwrap().len(), 6);

    let tokenizer = Tokenizer::from_package(&model).unwrap();
    let mut session =
        Session::new(&model, &SessionOptions { context: 0, threads: 2, ..SessionOptions::default() })
            .unwrap();
    // A leftover conversation in the session does not change the report (it is reset).
    session.prefill(Input::Tokens(&[1, 2, 3])).unwrap();
    let shared = generate_report_in(&mut session, &model, &tokenizer, &p.ct, &masks, &options, none).unwrap();
    let again = generate_report_in(&mut session, &model, &tokenizer, &p.ct, &masks, &options, none).unwrap();
    let json = |r: Report| serde_json::to_string(&without_timings(r)).unwrap();
    let base = json(own);
    assert_eq!(base, json(shared));
    assert_eq!(base, json(again), "a second report in the same session is the same");

    // A context that cannot hold the prompt is refused before decoding.
    let mut small =
        Session::new(&model, &SessionOptions { context: 16, threads: 1, ..SessionOptions::default() })
            .unwrap();
    let e = generate_report_in(&mut small, &model, &tokenizer, &p.ct, &masks, &options, none).unwrap_err();
    assert!(e.to_string().contains("16 positions"), "{e}");
}

/// `ReportOptions::activations`: `generate_report` with f32 activations runs and equals the
/// report of a caller's f32 session (whose mode `generate_report_in` follows, whatever the
/// options say). This tiny model's greedy texts come out the same with int8 activations, so
/// the two modes' different logits are checked at the session level (`tests/llm_parity.rs`).
#[test]
fn f32_activations_reach_the_report_decoder() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("q41.mrm");
    write_synthetic(&path, Preset::Tiny, 11, QuantPolicy::all(WeightType::Q4_1)).unwrap();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let none = &mut |_: &Event<'_>| ControlFlow::Continue(());
    let json = |r: Report| serde_json::to_string(&without_timings(r)).unwrap();
    let int8 = ReportOptions { max_new_tokens: Some(8), threads: 2, ..ReportOptions::default() };
    let f32 = ReportOptions { activations: Activations::F32, ..int8.clone() };
    let own = json(generate_report(&model, &p.ct, &masks, &f32, none).unwrap());
    let tokenizer = Tokenizer::from_package(&model).unwrap();
    let options = SessionOptions { threads: 1, activations: Activations::F32, ..SessionOptions::default() };
    let mut session = Session::new(&model, &options).unwrap();
    // The session's mode decides in `generate_report_in` (the options say int8 here).
    let shared = generate_report_in(&mut session, &model, &tokenizer, &p.ct, &masks, &int8, none).unwrap();
    assert_eq!(own, json(shared));
}

#[test]
fn the_session_cancel_flag_stops_the_pipeline_from_another_thread() {
    let model = Model::load(tiny("flag"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let tokenizer = Tokenizer::from_package(&model).unwrap();
    let mut session =
        Session::new(&model, &SessionOptions { threads: 1, ..SessionOptions::default() }).unwrap();
    let options = ReportOptions { max_new_tokens: Some(50), ..ReportOptions::default() };
    for at in [Stage::Encoder, Stage::Region] {
        let flag = session.cancel_flag();
        let mut after = 0;
        // The flag is set (as `mr_session_cancel` does, from any thread) when the stage starts;
        // nothing is reported after it.
        let r = std::thread::scope(|s| {
            let mut on = |e: &Event<'_>| {
                match e {
                    Event::Stage { stage, .. } if *stage == at && after == 0 => {
                        let flag = flag.clone();
                        s.spawn(move || flag.store(true, std::sync::atomic::Ordering::Release))
                            .join()
                            .unwrap();
                        after = 1;
                    }
                    _ if after > 0 => after += 1,
                    _ => {}
                }
                ControlFlow::Continue(())
            };
            generate_report_in(&mut session, &model, &tokenizer, &p.ct, &masks, &options, &mut on)
        });
        assert!(matches!(r, Err(Error::Cancelled)), "{at:?}: {r:?}");
        // At most the rest of the current step's events (the other regions' stage starts and
        // one token per region).
        assert!(after <= 1 + 6 + 6, "{at:?}: {after} events after the cancel");
        assert!(!flag.load(std::sync::atomic::Ordering::Acquire), "the flag is consumed");
    }
    // The session still works afterwards.
    let r =
        generate_report_in(&mut session, &model, &tokenizer, &p.ct, &masks, &options, &mut |_: &Event<
            '_,
        >| {
            ControlFlow::Continue(())
        });
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn four_threads_share_one_model_and_agree_with_one() {
    let model = Model::load(tiny("shared"), &LoadOptions::default()).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let tokenizer = Tokenizer::from_package(&model).unwrap();
    let options = ReportOptions { max_new_tokens: Some(6), ..ReportOptions::default() };
    let one = |threads: usize| {
        let mut session =
            Session::new(&model, &SessionOptions { threads, ..SessionOptions::default() }).unwrap();
        let r = generate_report_in(
            &mut session,
            &model,
            &tokenizer,
            &p.ct,
            &masks,
            &options,
            &mut |_: &Event<'_>| ControlFlow::Continue(()),
        )
        .unwrap();
        serde_json::to_string(&without_timings(r)).unwrap()
    };
    let alone = one(1);
    let together: Vec<String> = std::thread::scope(|s| {
        (0..4)
            .map(|_| s.spawn(|| one(1)))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect()
    });
    for (i, r) in together.iter().enumerate() {
        assert_eq!(r, &alone, "thread {i} differs from the single-thread run");
    }
}
