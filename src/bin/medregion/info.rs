//! `medregion info`: what this build is and which devices it sees.

use medregion::{devices, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also list the embedded CUDA kernels: families, architectures, and each kernel's ptxas
    /// statistics (registers, stack, spills).
    #[arg(long)]
    kernels: bool,
}

/// The embedded kernel images, as JSON (null without the `cuda` feature).
fn kernels_json() -> serde_json::Value {
    #[cfg(feature = "cuda")]
    {
        use medregion::backend::cuda::kernels::{FAMILIES, NVRTC_VERSION, PTXAS_STATS, PTX_ARCH};
        let families: Vec<_> = FAMILIES
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "kernels": f.kernels,
                    "cubin_archs": f.cubins.iter().map(|(a, _)| format!("sm_{a}")).collect::<Vec<_>>(),
                    "ptx_arch": format!("compute_{PTX_ARCH}"),
                })
            })
            .collect();
        serde_json::json!({
            "nvrtc": format!("{}.{}", NVRTC_VERSION.0, NVRTC_VERSION.1),
            "families": families,
            "ptxas": PTXAS_STATS,
        })
    }
    #[cfg(not(feature = "cuda"))]
    serde_json::Value::Null
}

pub fn run(args: Args) -> Result<()> {
    let features: Vec<&str> = if cfg!(feature = "cuda") { vec!["cuda"] } else { vec![] };
    if args.json {
        let doc = serde_json::json!({
            "version": medregion::VERSION,
            "abi_version": medregion::ABI_VERSION,
            "features": features,
            "devices": devices(),
        });
        let mut doc = doc;
        if args.kernels {
            doc["kernels"] = kernels_json();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!("medregion {} (C ABI {})", medregion::VERSION, medregion::ABI_VERSION);
    println!("features: {}", if features.is_empty() { "none".to_string() } else { features.join(", ") });
    println!("devices:");
    for d in devices() {
        let kind = match d.kind {
            medregion::DeviceKind::Cpu => "cpu".to_string(),
            medregion::DeviceKind::Cuda => format!("cuda:{}", d.ordinal),
        };
        if d.available {
            let mem = d.memory_bytes as f64 / (1u64 << 30) as f64;
            println!("  {kind:<7} {}  [{} compute units, {mem:.1} GiB]", d.name, d.compute_units);
        } else {
            println!("  {kind:<7} unavailable: {}", d.reason);
        }
    }
    if args.kernels {
        #[cfg(feature = "cuda")]
        {
            use medregion::backend::cuda::kernels::{stats_table, FAMILIES, NVRTC_VERSION};
            let (n, k) = (FAMILIES.len(), FAMILIES.iter().map(|f| f.kernels.len()).sum::<usize>());
            println!(
                "CUDA kernels: {n} families, {k} kernels; CUBIN for sm_80, sm_86, sm_89, sm_90 + PTX \
                 (NVRTC {}.{})",
                NVRTC_VERSION.0, NVRTC_VERSION.1
            );
            print!("{}", stats_table());
        }
        #[cfg(not(feature = "cuda"))]
        println!("CUDA kernels: none (built without --features cuda)");
    }
    Ok(())
}
