//! `medregion inspect`: describe a model package — config summary, tensor table, sizes per
//! component and per type, checksum status.

use std::path::PathBuf;

use medregion::io::package::{LoadOptions, Model, PackageInfo, SizeRow};
use medregion::model::config::ModelConfig;
use medregion::Result;

use crate::convert::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The package file.
    file: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,

    /// Skip the checksum verification (which reads the whole file).
    #[arg(long)]
    no_verify: bool,

    /// List the stored tensors (fillers, quantized parts, offsets) instead of the weights.
    #[arg(long)]
    stored: bool,

    /// Print the full config as JSON and nothing else.
    #[arg(long)]
    config: bool,
}

pub fn run(args: Args) -> Result<()> {
    let model = Model::load(&args.file, &LoadOptions::default())?;
    if args.config {
        return emit(&(model.config().to_json_pretty() + "\n"));
    }
    let (status, computed) = if args.no_verify {
        ("not_verified", None)
    } else {
        let c = model.compute_checksum();
        (if c == model.checksum() { "verified" } else { "mismatch" }, Some(c))
    };
    let info = model.info();
    if args.json {
        let mut doc = serde_json::to_value(&info).unwrap_or_default();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("checksum_status".into(), status.into());
            obj.insert("checksum_computed".into(), computed.clone().into());
            obj.insert("config".into(), serde_json::to_value(model.config()).unwrap_or_default());
            if !args.stored {
                obj.remove("tensors");
            }
        }
        emit(&(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"))?;
    } else {
        let mut out = String::new();
        print_text(&mut out, &info, model.config(), status, computed.as_deref(), args.stored);
        emit(&out)?;
    }
    if status == "mismatch" {
        return Err(medregion::Error::format(
            args.file.display().to_string(),
            "checksum mismatch: the file is corrupted or was modified",
        ));
    }
    Ok(())
}

/// Appends one formatted line to a `String`.
macro_rules! outln {
    ($o:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($o, $($arg)*);
    }};
}

/// Writes to stdout; a closed pipe (`inspect ... | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(medregion::Error::io("stdout", e)),
        _ => Ok(()),
    }
}

fn print_sizes(o: &mut String, title: &str, rows: &[SizeRow]) {
    outln!(o, "{title}:");
    outln!(o, "  {:<10} {:>8} {:>16} {:>12}", "", "tensors", "params", "bytes");
    for r in rows {
        outln!(o, "  {:<10} {:>8} {:>16} {:>12}", r.name, r.tensors, r.params, human_bytes(r.bytes));
    }
}

fn print_text(
    o: &mut String,
    info: &PackageInfo,
    c: &ModelConfig,
    status: &str,
    computed: Option<&str>,
    stored: bool,
) {
    outln!(o, "{}", info.path.as_deref().unwrap_or("(memory)"));
    outln!(
        o,
        "  medregion package v{}, {} ({} bytes), data at byte {}{}",
        info.format_version,
        human_bytes(info.file_bytes),
        info.file_bytes,
        info.data_offset,
        info.writer.as_deref().map(|w| format!(", written by {w}")).unwrap_or_default()
    );
    outln!(o, "  model: {}, {} parameters", info.model_name, info.params);
    outln!(o, "  tokenizer: {} ({} bytes)", info.tokenizer, info.tokenizer_bytes);
    match (status, computed) {
        ("verified", _) => outln!(o, "  checksum: {} (verified)", info.checksum),
        ("mismatch", Some(got)) => {
            outln!(o, "  checksum: {} MISMATCH (content hashes to {got})", info.checksum)
        }
        _ => outln!(o, "  checksum: {} (not verified)", info.checksum),
    }

    outln!(o, "config:");
    let p = &c.preprocess;
    outln!(
        o,
        "  preprocess: {}x{}x{} (DxHxW), {:?} HU [{}, {}], orientation {:?}",
        p.depth,
        p.height,
        p.width,
        p.normalization,
        p.hu_min,
        p.hu_max,
        p.orientation
    );
    let v = &c.vision;
    outln!(o,
        "  vision: DINOv2 hidden {}, {} layers, {} heads, mlp {}, patch {}, input {} px ({}x{} patches), feature {:?}",
        v.hidden_size, v.n_layers, v.n_heads, v.intermediate_size, v.patch_size, v.image_size, v.grid(), v.grid(), v.feature
    );
    let po = &c.pooling;
    outln!(
        o,
        "  pooling: {:?}/{:?}, T={} + K={} x {}x{} = {} image tokens",
        po.mode,
        po.select,
        po.n_slices,
        po.k_slices,
        po.grid,
        po.grid,
        po.n_tokens()
    );
    let m = &c.mask_extractor;
    let dims: Vec<String> = m.mlp_dims(po.n_tokens()).iter().map(|(o, i)| format!("{i}->{o}")).collect();
    outln!(
        o,
        "  mask extractor: levels {:?} ({:?}), embed {}, spatial {:?} MLP {}",
        m.levels,
        m.level_norm,
        m.embed_dim,
        m.spatial_input,
        dims.join(", ")
    );
    outln!(
        o,
        "  connector: {} -> {}{}",
        c.connector.in_dim,
        c.connector.out_dim,
        if c.connector.bias { " (+bias)" } else { "" }
    );
    let d = &c.decoder;
    let rope = match &d.rope_scaling {
        Some(s) => format!("llama3 x{} (orig {})", s.factor, s.original_max_position_embeddings),
        None => "no scaling".to_string(),
    };
    outln!(o,
        "  decoder: LLaMA hidden {}, {} layers, {} heads / {} kv x {}, mlp {}, vocab {}, rope theta {} {}, {} output",
        d.hidden_size,
        d.n_layers,
        d.n_heads,
        d.n_kv_heads,
        d.head_dim,
        d.intermediate_size,
        d.vocab_size,
        d.rope_theta,
        rope,
        if d.tie_word_embeddings { "tied" } else { "untied" }
    );
    outln!(
        o,
        "  tokens: bos {}, eos {:?}, <im_patch> {}, <mask> {}, <pos> {}",
        d.bos_token_id,
        d.eos_token_ids,
        d.image_token_id,
        d.mask_token_id,
        d.pos_token_id
    );
    let regions: Vec<&str> = c.regions.iter().map(|r| r.key.as_str()).collect();
    outln!(o, "  regions: {}; {} segmentation slots", regions.join(", "), c.segmentation.len());
    outln!(
        o,
        "  generation: max {} new tokens, max sequence {}",
        c.generation.max_new_tokens,
        c.generation.max_seq_len
    );

    print_sizes(o, "size by component", &info.components);
    print_sizes(o, "size by type", &info.weight_types);
    outln!(o, "  padding: {} bytes", info.padding_bytes);

    if stored {
        outln!(o, "stored tensors ({}):", info.tensors.len());
        for t in &info.tensors {
            outln!(
                o,
                "  {:>12} {:<5} {:>10} {:<20} {}",
                t.offset,
                t.dtype.name(),
                t.bytes,
                format!("{:?}", t.shape),
                t.name
            );
        }
    } else {
        outln!(o, "weights ({}):", info.weights.len());
        for w in &info.weights {
            outln!(
                o,
                "  {:<5} {:>12} {:<22} {}",
                w.weight_type.name(),
                w.bytes,
                format!("{:?}", w.shape),
                w.name
            );
        }
    }
}
