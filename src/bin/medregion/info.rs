//! `medregion info`: what this build is and which devices it sees.

use medregion::{devices, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
    Ok(())
}
