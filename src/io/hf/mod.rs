//! Hugging Face checkpoint import for `medregion convert` (DESIGN.md §3, SPEC-model.md §3, §10, §11).
//!
//! Reads HF checkpoint folders (safetensors, single file or sharded) and returns plain f32 tensors
//! under the package's canonical names, validated against the checkpoint's `config.json`:
//! * [`load_llama`]: `LlamaForCausalLM` (LLaMA-3 / 3.1) → `llm.*`, optionally with a PEFT LoRA
//!   adapter merged in as W + (α/r)·B·A ([`lora`]);
//! * [`load_dinov2`]: `Dinov2Model` (RAD-DINO) → `vit.*`, with the position-embedding table
//!   re-interpolated for the encoder input size the package will run at ([`dinov2`], [`interp`]).
//!
//! The package writer quantizes and stores what these return; nothing here writes files.

pub mod dinov2;
pub mod interp;
pub mod llama;
pub mod lora;
pub mod safetensors_in;

pub use dinov2::{load_dinov2, load_dinov2_with, HfDinov2Config, PosInterpolation};
pub use interp::{bicubic_resize_grid, resize_grid_with, BicubicKernel};
pub use llama::{load_llama, HfLlamaConfig, Llama3RopeScaling};
pub use lora::{LoraAdapter, LoraConfig};
pub use safetensors_in::SafetensorsSet;

/// One imported tensor: canonical name, shape, row-major f32 data.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Canonical package name (`llm.layers.0.self_attn.q_proj.weight`, `vit.embeddings.cls_token`).
    pub name: String,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values, row-major.
    pub data: Vec<f32>,
}
