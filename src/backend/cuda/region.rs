//! The feature side of the region tokens on the GPU (issue #9): the R² pooling of the encoder
//! arrays that [`super::encoder::DeviceEncoder::encode_on_device`] left in device memory, as a
//! [`PooledFeatures`] for [`crate::region::RegionHeads::tokens_with`].
//!
//! What runs where, and why:
//! * On the device: the LayerNorm of the extractor levels (when `level_norm` asks for it), the
//!   global token of every slice of every array, and the `g × g` adaptive pooling of the
//!   selected slices' patch grids (`kernels/pool.cu`, `kernels/layer_norm.cu`, bit-identical
//!   twins of `region::pool::{mean_rows, adaptive_pool_rows}` and `vision::layer_norm`). These
//!   read the whole study's features (`(1 + levels) × T × (1 + gp²) × D` values, ~0.6 GB for
//!   the full-size preset), which therefore never cross the bus: only the pooled tokens come
//!   back (`[T, D]` per array, `[g², D]` per array and selected slice, ~1 MB per region).
//! * The connector's product (`proj`, `x · Wᵀ` for every global token and selected slice grid:
//!   ~12 GFLOP for six regions at full size) on cuBLAS in f32 ([`DeviceConnector`], uploaded
//!   once per device model): the pooled rows go up (~0.25 MB per slice), the products come
//!   back, the host adds the bias as its own `Linear` does. f32 GEMM, so the image tokens
//!   differ from the CPU's by the summation order only (~1e-7 relative).
//! * On the host (choice): the mask side (bilinear masks at patch resolution, areas, slice
//!   selection — it starts from the host's slot masks and decides host-side control flow), the
//!   Osprey masked means and the small linears of the mask extractor and the spatial MLP (a
//!   few rows per region), all in [`crate::region::RegionHeads::tokens_with`], one definition
//!   for both devices. Every region token but the image tokens is then the CPU's bit for bit
//!   for the same encoder output.

use cudarc::driver::CudaSlice;

use super::blas::Blas;
use super::encoder::DeviceVision;
use super::ops::vision::{
    adaptive_pool, global_tokens, layer_norm, LayerNormParams, Out, TokenGrid, MAX_POOL_SLICES,
};
use super::Gpu;
use crate::region::tokens::{missing_level, patch_grid};
use crate::region::{FeatureArrays, PooledFeatures, RegionHeads};
use crate::{Error, Result};

/// One feature array on the device: an encoder output as it is, or a LayerNorm-ed copy.
enum Array<'v> {
    Borrowed(&'v CudaSlice<f32>),
    Owned(CudaSlice<f32>),
}

impl Array<'_> {
    fn get(&self) -> &CudaSlice<f32> {
        match self {
            Array::Borrowed(x) => x,
            Array::Owned(x) => x,
        }
    }
}

/// The connector's weight on a device (f32 `[out, D]`) and a cuBLAS handle on the device's
/// stream: [`DeviceFeatures`] multiplies the pooled image features there.
pub struct DeviceConnector {
    blas: Blas,
    w: CudaSlice<f32>,
    out: usize,
    input: usize,
}

impl std::fmt::Debug for DeviceConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceConnector").field("out", &self.out).field("in", &self.input).finish()
    }
}

impl DeviceConnector {
    /// Uploads `heads`' connector weight to `gpu` (dequantized to f32 when stored quantized).
    pub fn upload(gpu: &std::sync::Arc<Gpu>, heads: &RegionHeads<'_>) -> Result<DeviceConnector> {
        let (w, _) = heads.connector();
        let &[out, input] = w.shape() else {
            return Err(Error::Internal(format!("connector weight of shape {:?}", w.shape())));
        };
        Ok(DeviceConnector { blas: Blas::new(gpu)?, w: gpu.upload(&w.to_f32()?)?, out, input })
    }
}

/// [`PooledFeatures`] of a [`DeviceVision`]: pools on the device, downloads the pooled tokens;
/// with a [`DeviceConnector`], multiplies the connector there too.
pub struct DeviceFeatures<'v> {
    gpu: &'v Gpu,
    arrays: Vec<Array<'v>>,
    layout: TokenGrid,
    connector: Option<&'v DeviceConnector>,
}

impl std::fmt::Debug for DeviceFeatures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceFeatures")
            .field("arrays", &self.arrays.len())
            .field("layout", &self.layout)
            .finish()
    }
}

impl<'v> DeviceFeatures<'v> {
    /// The arrays `which` names, from `vision` on `gpu` (the device it was encoded on), checked
    /// against `t` slices of `d` values; the levels are LayerNorm-ed now when `which` asks.
    pub fn new(
        gpu: &'v Gpu,
        vision: &'v DeviceVision,
        which: FeatureArrays<'_>,
        t: usize,
        d: usize,
    ) -> Result<DeviceFeatures<'v>> {
        let dims = [vision.n_slices, vision.n_tokens, vision.hidden_size];
        let gp = patch_grid("device vision output for R² pooling", dims, t, d)?;
        let level = |l: usize| vision.hidden_state(l).ok_or_else(|| missing_level(l));
        let image = match which.image_level {
            None => &vision.last_hidden_state,
            Some(l) => level(l)?,
        };
        let mut arrays = vec![Array::Borrowed(image)];
        let norm = match which.level_norm {
            Some((w, b, eps)) => Some((gpu.upload(w)?, gpu.upload(b)?, eps)),
            None => None,
        };
        for &l in which.levels {
            let x = level(l)?;
            arrays.push(match &norm {
                Some((w, b, eps)) => {
                    let mut y = gpu.alloc::<f32>(x.len())?;
                    let params = LayerNormParams { weight: w.as_view(), bias: b.as_view(), eps: *eps };
                    layer_norm(gpu, &x.as_view(), &params, Out::F32(y.as_view_mut()))?;
                    Array::Owned(y)
                }
                None => Array::Borrowed(x),
            });
        }
        Ok(DeviceFeatures { gpu, arrays, layout: TokenGrid::features(t, gp, d), connector: None })
    }

    /// Multiplies the connector on the device with `connector` (uploaded for this model, on the
    /// same device) instead of leaving it to the host.
    pub fn with_connector(mut self, connector: &'v DeviceConnector) -> Result<DeviceFeatures<'v>> {
        if connector.input != self.layout.dim {
            return Err(Error::Shape {
                what: "device connector".into(),
                expected: format!("[out, {}] (the features' width)", self.layout.dim),
                found: format!("[{}, {}]", connector.out, connector.input),
            });
        }
        self.connector = Some(connector);
        Ok(self)
    }

    fn array(&self, a: usize) -> Result<&CudaSlice<f32>> {
        self.arrays.get(a).map(Array::get).ok_or_else(|| Error::Internal(format!("no feature array {a}")))
    }
}

impl PooledFeatures for DeviceFeatures<'_> {
    fn dims(&self) -> (usize, usize, usize) {
        (self.layout.n_slices, self.layout.grid, self.layout.dim)
    }

    fn globals(&mut self, a: usize) -> Result<Vec<f32>> {
        let x = self.array(a)?;
        let n = self.layout.n_slices * self.layout.dim;
        let mut out = self.gpu.alloc::<f32>(n.max(1))?;
        global_tokens(self.gpu, &x.as_view(), &self.layout, &mut out.slice_mut(..n))?;
        self.gpu.download(&out.slice(..n))
    }

    fn grids(&mut self, a: usize, slices: &[usize], g: usize) -> Result<Vec<f32>> {
        let x = self.array(a)?;
        let per = g * g * self.layout.dim;
        let mut out = self.gpu.alloc::<f32>((slices.len().min(MAX_POOL_SLICES) * per).max(1))?;
        let mut host = Vec::with_capacity(slices.len() * per);
        for part in slices.chunks(MAX_POOL_SLICES) {
            let n = part.len() * per;
            adaptive_pool(self.gpu, &x.as_view(), &self.layout, part, g, &mut out.slice_mut(..n))?;
            host.extend(self.gpu.download(&out.slice(..n))?);
        }
        Ok(host)
    }

    fn connector_product(&mut self, x: &[f32], n: usize) -> Result<Option<Vec<f32>>> {
        let Some(c) = self.connector else { return Ok(None) };
        if x.len() != n * c.input {
            return Err(Error::Shape {
                what: "connector input".into(),
                expected: format!("[{n}, {}]", c.input),
                found: format!("{} values", x.len()),
            });
        }
        if n == 0 {
            return Ok(Some(Vec::new()));
        }
        let dx = self.gpu.upload(x)?;
        let mut y = self.gpu.alloc::<f32>(n * c.out)?;
        c.blas.gemm_xwt_f32(&dx, &c.w, &mut y, n, c.out, c.input)?;
        self.gpu.download(&y).map(Some)
    }
}
