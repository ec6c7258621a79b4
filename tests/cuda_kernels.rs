//! The embedded CUDA kernels, checked without a GPU (runs in CI with `--features cuda`): every
//! `kernels/*.cu` family was compiled by build.rs into CUBIN for sm_80, sm_86, sm_89 and sm_90
//! plus PTX, every kernel is in every image, and no kernel spills registers. Prints the ptxas
//! statistics table (registers, stack, spills) of every kernel.

#![cfg(feature = "cuda")]

use std::io::Write;

use medregion::backend::cuda::kernels::{image_for, stats_table, Image, FAMILIES, PTXAS_STATS, PTX_ARCH};

const ARCHS: [u32; 4] = [80, 86, 89, 90];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_source_file_is_a_compiled_family() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut sources: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    sources.sort();
    let mut built: Vec<String> = FAMILIES.iter().map(|f| f.name.to_string()).collect();
    built.sort();
    assert_eq!(sources, built);
    for f in FAMILIES {
        assert!(!f.kernels.is_empty(), "kernels/{}.cu defines no kernel", f.name);
    }
}

#[test]
fn every_family_has_cubins_for_every_arch_and_ptx() {
    for f in FAMILIES {
        let archs: Vec<u32> = f.cubins.iter().map(|(a, _)| *a).collect();
        assert_eq!(archs, ARCHS, "{}", f.name);
        for (arch, bytes) in f.cubins {
            assert!(bytes.starts_with(b"\x7fELF"), "{} sm_{arch}: not an ELF cubin", f.name);
            for k in f.kernels {
                assert!(contains(bytes, k.as_bytes()), "{} sm_{arch}: kernel {k} missing", f.name);
            }
        }
        assert_eq!(f.ptx.last(), Some(&0), "{}: PTX must be NUL-terminated for cuModuleLoadData", f.name);
        let ptx = std::str::from_utf8(&f.ptx[..f.ptx.len() - 1]).expect("PTX is text");
        assert!(ptx.contains(&format!(".target sm_{PTX_ARCH}")), "{}: PTX target", f.name);
        for k in f.kernels {
            assert!(ptx.contains(&format!(".entry {k}(")), "{}: PTX lacks .entry {k}", f.name);
        }
    }
}

#[test]
fn kernel_names_are_unique_and_unmangled() {
    let mut all: Vec<&str> = FAMILIES.iter().flat_map(|f| f.kernels.iter().copied()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a kernel name is defined twice");
    assert!(all.iter().all(|k| !k.starts_with("_Z")), "every kernel is extern \"C\"");
}

#[test]
fn no_kernel_spills_and_the_table_is_printed() {
    // Printed straight to stderr (not captured), so CI logs show it.
    let _ =
        writeln!(std::io::stderr(), "\nptxas statistics of the embedded CUDA kernels:\n{}", stats_table());
    for f in FAMILIES {
        for k in f.kernels {
            let archs: Vec<u32> = PTXAS_STATS.iter().filter(|s| s.kernel == *k).map(|s| s.arch).collect();
            assert_eq!(archs, ARCHS, "statistics of {k}");
        }
    }
    for s in PTXAS_STATS {
        assert!(s.registers > 0 && s.registers <= 255, "{s:?}");
        assert_eq!((s.spill_stores, s.spill_loads), (0, 0), "{s:?} spills");
    }
}

#[test]
fn each_device_gets_the_right_image() {
    let f = &FAMILIES[0];
    let pick = |major, minor| match image_for(f, major, minor) {
        Some(Image::Cubin(a, _)) => format!("sm_{a}"),
        Some(Image::Ptx(_)) => "ptx".to_string(),
        None => "none".to_string(),
    };
    assert_eq!(pick(8, 0), "sm_80"); // A100
    assert_eq!(pick(8, 6), "sm_86"); // A10, RTX 30xx
    assert_eq!(pick(8, 7), "sm_86"); // Orin: newest cubin of the same major that is not newer
    assert_eq!(pick(8, 9), "sm_89"); // L4, L40, RTX 40xx
    assert_eq!(pick(9, 0), "sm_90"); // H100, H200
    assert_eq!(pick(10, 0), "ptx"); // B200: JIT from PTX
    assert_eq!(pick(12, 0), "ptx");
    assert_eq!(pick(7, 5), "none"); // T4: too old
}

#[test]
fn info_lists_the_embedded_kernels() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["info", "--kernels", "--json"])
        .output()
        .expect("run medregion");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let families: Vec<&str> =
        doc["kernels"]["families"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(families, FAMILIES.iter().map(|f| f.name).collect::<Vec<_>>());
    assert_eq!(doc["kernels"]["ptxas"].as_array().unwrap().len(), PTXAS_STATS.len());
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["info", "--kernels"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CUBIN for sm_80, sm_86, sm_89, sm_90 + PTX"), "{text}");
}
