//! `include/medregion.h` is generated from `src/ffi/` by the pinned cbindgen (=0.29.4). This test
//! regenerates it in memory and fails on any difference, so the committed header is always the
//! contract the library implements. `MEDREGION_BLESS=1` rewrites the file instead.

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/medregion.h");
    let fresh = generate();
    if std::env::var_os("MEDREGION_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/medregion.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first = committed.lines().zip(fresh.lines()).position(|(a, b)| a != b);
        panic!(
            "include/medregion.h is stale (first differing line: {:?}); regenerate it with \
             `MEDREGION_BLESS=1 cargo test --release --test header` and commit it",
            first.map(|i| i + 1)
        );
    }
}

#[test]
fn header_exports_only_mr_names() {
    let h = generate();
    assert!(h.is_ascii(), "the header must be plain ASCII (doc comments included)");
    for line in h.lines() {
        let l = line.trim_start();
        if let Some(rest) = l.strip_prefix("#define ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            assert!(name.starts_with("MR_") || name == "MEDREGION_H", "non-MR macro: {line}");
        }
        if l.starts_with("typedef") {
            assert!(l.contains(" mr_") || l.contains("(*mr_"), "non-mr typedef: {line}");
        }
    }
}
