//! Progress of `medregion report` on stderr, in one of four forms:
//!
//! * **bars** (stderr is a terminal, the default there): an indicatif bar per stage — a spinner
//!   for preprocessing, attributes and tokens, slices for the encoder, tokens for decoding
//!   (all regions together, the current region as the message), a study counter in batch mode;
//! * **lines** (stderr is not a terminal: logs, pipes): one plain line per stage start;
//! * **json** (`--progress-json`): every [`Event`] as one JSON object per line, with the study's
//!   name in batch mode (`{"study": "...", "event": "stage", ...}`);
//! * **quiet** (`--quiet`): nothing.
//!
//! The report itself never goes to stderr, so stdout stays clean in every form.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use medregion::report::{Event, Stage, Timings};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Json,
    Lines,
    Bars,
}

impl Mode {
    /// `--quiet`, `--progress-json`, else bars on a terminal and lines otherwise.
    pub fn choose(quiet: bool, json: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    study: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

/// Shows the events of one or several studies.
pub struct Progress {
    mode: Mode,
    /// The study name (batch mode only: one study prints no name).
    study: Option<String>,
    multi: MultiProgress,
    studies: Option<ProgressBar>,
    stage: Option<ProgressBar>,
    /// Tokens expected per region (for the decode bar's length).
    tokens_per_region: usize,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// `studies` > 1 shows a study counter (bars) or names each study (lines, json).
    pub fn new(mode: Mode, studies: usize, tokens_per_region: usize) -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let studies = (mode == Mode::Bars && studies > 1).then(|| {
            let bar = multi.add(ProgressBar::new(studies as u64));
            bar.set_style(style("{prefix:>10} [{bar:30}] {pos}/{len} {msg}"));
            bar.set_prefix("studies");
            bar
        });
        Progress { mode, study: None, multi, studies, stage: None, tokens_per_region }
    }

    /// A study starts (`name` is shown when there are several).
    pub fn start_study(&mut self, name: &str, several: bool) {
        self.study = several.then(|| name.to_string());
        if let Some(bar) = &self.studies {
            bar.set_message(name.to_string());
        }
        if self.mode == Mode::Lines && several {
            eprintln!("== {name}");
        }
    }

    /// A study ended (`ok` or failed); clears its bars.
    pub fn end_study(&mut self) {
        if let Some(bar) = self.stage.take() {
            bar.finish_and_clear();
        }
        if let Some(bar) = &self.studies {
            bar.inc(1);
        }
    }

    /// Prints `line` on stderr without tearing the bars (nothing in quiet and json modes).
    pub fn println(&self, line: &str) {
        match self.mode {
            Mode::Quiet | Mode::Json => {}
            Mode::Lines => eprintln!("{line}"),
            Mode::Bars => {
                let _ = self.multi.println(line);
            }
        }
    }

    /// The stage timings of a finished study.
    pub fn timings(&self, t: &Timings) {
        self.println(&format!(
            "done in {:.2} s (preprocess {:.2}, attributes {:.2}, encoder {:.2}, tokens {:.2}, prefill {:.2}, decode {:.2})",
            t.total, t.preprocess, t.attributes, t.encoder, t.tokens, t.prefill, t.decode
        ));
    }

    pub fn event(&mut self, e: &Event<'_>) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                let line = JsonLine { study: self.study.as_deref(), event: e };
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{}",
                    serde_json::to_string(&line).unwrap_or_default()
                );
            }
            Mode::Lines => {
                if let Event::Stage { stage, index, count, region } = e {
                    match region {
                        Some(r) => eprintln!("[{stage:?}] {r} ({}/{count})", index + 1),
                        None => eprintln!("[{stage:?}] ({count})"),
                    }
                }
            }
            Mode::Bars => self.bar_event(e),
        }
    }

    fn bar_event(&mut self, e: &Event<'_>) {
        match *e {
            Event::Stage { stage: Stage::Region, index, count, region } => {
                // Batched decoding announces every region at once; one bar counts all tokens.
                if index == 0 {
                    self.replace(
                        "decode",
                        (count * self.tokens_per_region) as u64,
                        "{prefix:>10} [{bar:30}] {pos}/{len} tokens {msg} {elapsed}",
                    );
                }
                if let (Some(bar), Some(r)) = (&self.stage, region) {
                    bar.set_message(r.to_string());
                }
            }
            Event::Stage { stage: Stage::Encoder, count, .. } => {
                self.replace("encoder", count as u64, "{prefix:>10} [{bar:30}] {pos}/{len} slices {elapsed}");
            }
            Event::Stage { stage, .. } => {
                let name = format!("{stage:?}").to_lowercase();
                let bar = self.replace(&name, 0, "{prefix:>10} {spinner} {elapsed}");
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            Event::Progress { done, .. } => {
                if let Some(bar) = &self.stage {
                    bar.set_position(done as u64);
                }
            }
            Event::Token { region, .. } => {
                if let Some(bar) = &self.stage {
                    bar.inc(1);
                    bar.set_message(region.to_string());
                }
            }
        }
    }

    fn replace(&mut self, prefix: &str, len: u64, template: &str) -> ProgressBar {
        if let Some(old) = self.stage.take() {
            old.finish_and_clear();
        }
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(style(template));
        bar.set_prefix(prefix.to_string());
        self.stage = Some(bar.clone());
        bar
    }

    /// Removes every bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.stage.take() {
            bar.finish_and_clear();
        }
        if let Some(bar) = self.studies.take() {
            bar.finish_and_clear();
        }
    }
}
