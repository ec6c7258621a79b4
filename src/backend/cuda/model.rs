//! A whole model on one GPU: the vision encoder, the connector and the decoder uploaded once
//! ([`CudaModel::upload`]), shared read-only by every report or generation that runs on the
//! device (`report::generate_report_cuda`, `medregion report|generate|encode --device cuda:N`).
//!
//! Choices:
//! * The encoder runs in [`Precision::F32`] by default, so a report on the GPU matches the
//!   CPU's report (the encoder within ~1e-6 relative, the decoder's matmuls bit-identical);
//!   [`Precision::Bf16`] is the faster production setting (`CudaOptions::encoder`).
//! * The decoder's RoPE table covers `min(max_position_embeddings, 4096)` positions, like the
//!   CPU session's default context; sessions over it take at most that many.

use std::sync::Arc;

use super::decoder::DeviceDecoder;
use super::encoder::{DeviceEncoder, Precision};
use super::region::DeviceConnector;
use super::Gpu;
use crate::model::Model;
use crate::Result;

/// How [`CudaModel::upload`] places a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// The N of `cuda:N`.
    pub ordinal: usize,
    /// The encoder's GEMM precision.
    pub encoder: Precision,
    /// Keep f16 copies of the decoder's quantized weights for the GEMM prefill
    /// ([`DeviceDecoder::keep_prefill_copies`]: faster prefill, 2 more bytes per weight).
    pub prefill_copies: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions { ordinal: 0, encoder: Precision::F32, prefill_copies: false }
    }
}

/// The encoder, the connector and the decoder of one model on one device.
#[derive(Debug)]
pub struct CudaModel {
    gpu: Arc<Gpu>,
    encoder: DeviceEncoder,
    connector: DeviceConnector,
    decoder: DeviceDecoder,
}

impl CudaModel {
    /// Opens the device and uploads every weight of `model` (errors name what failed: no
    /// driver, no such device, an unsupported shape, out of device memory).
    pub fn upload(model: &Model<'_>, options: &CudaOptions) -> Result<CudaModel> {
        let gpu = Gpu::open(options.ordinal)?;
        let encoder = DeviceEncoder::upload(&gpu, model, options.encoder)?;
        let connector = DeviceConnector::upload(&gpu, &crate::region::RegionHeads::new(model)?)?;
        let mut decoder = DeviceDecoder::upload(&gpu, model)?;
        if options.prefill_copies {
            decoder.keep_prefill_copies(super::blas::Half::F16)?;
        }
        Ok(CudaModel { gpu, encoder, connector, decoder })
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The vision encoder.
    pub fn encoder(&self) -> &DeviceEncoder {
        &self.encoder
    }

    /// The connector's weight (the region tokens' image projection).
    pub fn connector(&self) -> &DeviceConnector {
        &self.connector
    }

    /// The decoder.
    pub fn decoder(&self) -> &DeviceDecoder {
        &self.decoder
    }
}
