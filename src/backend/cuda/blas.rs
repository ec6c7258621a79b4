//! Dense GEMMs on cuBLAS (the encoder's linear layers and prefill, DESIGN.md §6), and the
//! element conversions around them (`kernels/convert.cu`).
//!
//! Inputs are 16-bit (bf16 or f16, as their bit patterns in `u16` buffers), accumulation and
//! output are f32 (`CUBLAS_COMPUTE_32F`). Matrices are row-major as everywhere in medregion:
//! `out[m, n] = x[m, k] · w[n, k]ᵀ`, the CPU's `ops::gemm` contract; the column-major call is
//! `C(n×m) = op(W)ᵀ · X` with the leading dimensions of the row-major buffers.
//!
//! The CPU twin computes in f32 from f32 activations, so results differ by the 16-bit rounding
//! of the inputs: the parity tests bound that by the inputs' rounding (about 2⁻⁸ relative per
//! product for bf16, 2⁻¹¹ for f16, against an f64 reference of the rounded inputs).
//!
//! cuBLAS is loaded dynamically like the driver; [`Blas::new`] checks that the library is
//! present before the first call (cudarc would panic) and keeps a panic boundary anyway.

use std::sync::Arc;

use cudarc::cublas::{result as blas_result, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{check_len, launch_error, to_i32, Gpu};
use crate::{Error, Result};

/// The 16-bit input type of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

/// A cuBLAS handle bound to a [`Gpu`]'s stream.
pub struct Blas {
    blas: CudaBlas,
    gpu: Arc<Gpu>,
}

impl std::fmt::Debug for Blas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blas").field("gpu", &self.gpu.ordinal()).finish()
    }
}

impl Blas {
    /// A cuBLAS handle on `gpu`'s stream, or an error when cuBLAS cannot be loaded.
    pub fn new(gpu: &Arc<Gpu>) -> Result<Blas> {
        // SAFETY: only tries to dlopen cuBLAS by its usual names.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(Error::Device(
                "cuBLAS could not be loaded (libcublas.so and libcublasLt.so of the CUDA version this \
                 build targets; set LD_LIBRARY_PATH, e.g. to the nvidia-cublas wheel's lib folder)"
                    .into(),
            ));
        }
        let stream = gpu.stream().clone();
        match std::panic::catch_unwind(move || CudaBlas::new(stream)) {
            Ok(Ok(blas)) => Ok(Blas { blas, gpu: gpu.clone() }),
            Ok(Err(e)) => Err(Error::Device(format!("cuBLAS handle: {e:?}"))),
            Err(_) => Err(Error::Device("cuBLAS failed to initialise (caught panic)".into())),
        }
    }

    /// `out[m, n] = x[m, k] · w[n, k]ᵀ` (row-major), 16-bit inputs of type `ty`, f32 out.
    /// Operands are whole buffers or views (a view's start must keep the 16-byte alignment
    /// cuBLAS's tensor-core paths prefer; a view from offset 0 does).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_xwt(
        &self,
        ty: Half,
        x: &impl DevicePtr<u16>,
        w: &impl DevicePtr<u16>,
        out: &mut impl DevicePtrMut<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let dtype = match ty {
            Half::Bf16 => blas_sys::cudaDataType_t::CUDA_R_16BF,
            Half::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
        };
        self.gemm_ex(dtype, x, w, out, m, n, k)
    }

    /// `out[m, n] = x[m, k] · w[n, k]ᵀ` (row-major), all f32: the encoder's validation path.
    ///
    /// `cublasGemmEx` with `CUDA_R_32F` everywhere and `CUBLAS_COMPUTE_32F` under the handle's
    /// default math mode, so no TF32 tensor cores (unless the process sets
    /// `NVIDIA_TF32_OVERRIDE=1`). Sums of `k` products in cuBLAS's own order: not bit-identical
    /// to the CPU's `ops::gemm`, within f32 rounding of it.
    pub fn gemm_xwt_f32(
        &self,
        x: &impl DevicePtr<f32>,
        w: &impl DevicePtr<f32>,
        out: &mut impl DevicePtrMut<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        self.gemm_ex(blas_sys::cudaDataType_t::CUDA_R_32F, x, w, out, m, n, k)
    }

    /// The row-major `x·wᵀ` of both entry points: inputs of `dtype`, f32 accumulate and out.
    #[allow(clippy::too_many_arguments)]
    fn gemm_ex<T>(
        &self,
        dtype: blas_sys::cudaDataType_t,
        x: &impl DevicePtr<T>,
        w: &impl DevicePtr<T>,
        out: &mut impl DevicePtrMut<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        if m == 0 || n == 0 || k == 0 {
            return Err(Error::invalid("gemm", format!("empty GEMM ({m} x {n} x {k})")));
        }
        check_len("gemm activations x[m, k]", x, m * k)?;
        check_len("gemm weight w[n, k]", w, n * k)?;
        check_len("gemm output out[m, n]", out, m * n)?;
        let (mi, ni, ki) = (to_i32("m", m)?, to_i32("n", n)?, to_i32("k", k)?);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let stream = self.gpu.stream();
        let (wp, _rw) = w.device_ptr(stream);
        let (xp, _rx) = x.device_ptr(stream);
        let (cp, _rc) = out.device_ptr_mut(stream);
        // SAFETY: the buffers hold at least the elements checked above (of the type `dtype`
        // names), on this handle's stream; the dimensions and leading dimensions describe
        // exactly those row-major arrays.
        unsafe {
            blas_result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&alpha) as *const f32 as *const _,
                wp as *const _,
                dtype,
                ki,
                xp as *const _,
                dtype,
                ki,
                (&beta) as *const f32 as *const _,
                cp as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Device(format!("cuBLAS GEMM {m}x{n}x{k}: {e:?}")))
    }
}

fn elementwise_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65_535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// `y = ty(x)` for the first `n` elements (round to nearest even).
pub fn f32_to_half(
    gpu: &Gpu,
    ty: Half,
    x: &CudaView<'_, f32>,
    y: &mut CudaViewMut<'_, u16>,
    n: usize,
) -> Result<()> {
    let name = match ty {
        Half::Bf16 => "convert_f32_to_bf16",
        Half::F16 => "convert_f32_to_f16",
    };
    convert(gpu, name, x, y, n)
}

/// `y = f32(x)` for the first `n` 16-bit elements of type `ty` (exact).
pub fn half_to_f32(
    gpu: &Gpu,
    ty: Half,
    x: &CudaView<'_, u16>,
    y: &mut CudaViewMut<'_, f32>,
    n: usize,
) -> Result<()> {
    let name = match ty {
        Half::Bf16 => "convert_bf16_to_f32",
        Half::F16 => "convert_f16_to_f32",
    };
    convert(gpu, name, x, y, n)
}

/// Launches the `convert_*` kernel `name`, `(y, x, n)`, over the first `n` elements.
fn convert<A, B>(
    gpu: &Gpu,
    name: &str,
    x: &CudaView<'_, A>,
    y: &mut CudaViewMut<'_, B>,
    n: usize,
) -> Result<()> {
    check_len("conversion input", x, n)?;
    check_len("conversion output", y, n)?;
    let n_i = to_i32("n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(&mut *y).arg(x).arg(&n_i);
    // SAFETY: both buffers hold at least `n` elements (checked) of the types the kernel `name`
    // takes; the kernel touches i < n only.
    unsafe { b.launch(elementwise_config(n)) }.map_err(|e| launch_error(name, e))?;
    Ok(())
}
