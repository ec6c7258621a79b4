//! The CUDA backend (feature `cuda`): a device context with every kernel of `kernels/*.cu` loaded,
//! and safe launchers for them ([`ops`]).
//!
//! - Loading is dynamic (cudarc `dynamic-loading`): the library builds and runs with no CUDA at
//!   all. cudarc panics on the first call into a missing library, so [`Gpu::open`] first asks the
//!   probe ([`crate::devices`], which checks that the driver library loads) and then keeps a
//!   panic boundary around every driver call it makes while opening: a machine without a
//!   driver, without the device, or with a GPU older than sm_80 gets an error value.
//! - The kernels are compiled at build time (build.rs, NVRTC) and embedded ([`kernels`]); a
//!   device loads the CUBIN of its architecture, or the PTX when none fits (JIT by the driver).
//!   A deployment needs only the driver.
//! - One [`Gpu`] per device and stream: it owns a CUDA context handle (cudarc shares the
//!   primary context between handles of the same device) and one stream; every launcher
//!   enqueues on that stream, and only [`Gpu::download`] and [`Gpu::sync`] wait. cudarc's
//!   per-buffer event tracking is turned off (the one stream orders everything), which also
//!   keeps launches capturable in a CUDA graph. A buffer must not be used on another `Gpu`'s
//!   stream.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DeviceSlice,
    DriverError, ValidAsZeroBits,
};

use crate::backend::{devices, DeviceKind};
use crate::{Error, Result};

pub mod blas;
pub mod decoder;
pub mod encoder;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod region;

/// One CUDA device with every kernel loaded, and one stream to run them on.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    capability: (u32, u32),
    image: String,
    functions: HashMap<&'static str, CudaFunction>,
    // Keeps the modules loaded as long as the functions are used.
    _modules: Vec<Arc<CudaModule>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("capability", &self.capability)
            .field("image", &self.image)
            .field("kernels", &self.functions.len())
            .finish()
    }
}

/// A driver error from launching `kernel`, as [`Error::Device`].
pub fn launch_error(kernel: &str, e: DriverError) -> Error {
    Error::Device(format!("CUDA kernel {kernel}: {e:?}"))
}

/// A driver error from `what`, as [`Error::Device`] (out of memory as [`Error::OutOfMemory`]).
pub fn driver_error(what: &str, e: DriverError) -> Error {
    let text = format!("{e:?}");
    if text.contains("OUT_OF_MEMORY") {
        Error::OutOfMemory(format!("CUDA {what}: {text}"))
    } else {
        Error::Device(format!("CUDA {what}: {text}"))
    }
}

impl Gpu {
    /// Opens CUDA device `ordinal` (the N of `cuda:N`) and loads every kernel.
    pub fn open(ordinal: usize) -> Result<Arc<Gpu>> {
        let listed = devices().iter().filter(|d| d.kind == DeviceKind::Cuda).collect::<Vec<_>>();
        match listed.iter().find(|d| d.ordinal as usize == ordinal) {
            Some(d) if d.available => {}
            Some(d) => return Err(Error::Device(format!("cuda:{ordinal} is not available: {}", d.reason))),
            None => {
                let n = listed.iter().filter(|d| d.available).count();
                return Err(Error::NotFound(format!("cuda:{ordinal} ({n} CUDA device(s) available)")));
            }
        }
        match std::panic::catch_unwind(|| Gpu::open_unguarded(ordinal)) {
            Ok(r) => r.map(Arc::new),
            Err(_) => {
                Err(Error::Device(format!("opening cuda:{ordinal} failed unexpectedly (caught panic)")))
            }
        }
    }

    fn open_unguarded(ordinal: usize) -> Result<Gpu> {
        let ctx = CudaContext::new(ordinal).map_err(|e| driver_error("context", e))?;
        // Everything of a Gpu runs on its one stream, so the stream's order is the only
        // synchronisation needed: cudarc's per-buffer events (on by default once a stream is
        // created) would only add an event record per buffer per launch, and their waits on
        // events recorded before a CUDA-graph capture began would break the capture.
        // SAFETY: affects buffers allocated after this call; every buffer of this Gpu is used on
        // its own stream only (launches, copies and frees), which orders them.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_error("compute capability", e))?;
        let capability = (major.max(0) as u32, minor.max(0) as u32);
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".to_string());
        let stream = ctx.new_stream().map_err(|e| driver_error("stream", e))?;
        let mut functions = HashMap::new();
        let mut modules = Vec::new();
        let mut image_desc = String::new();
        for family in kernels::FAMILIES {
            let image = kernels::image_for(family, capability.0, capability.1).ok_or_else(|| {
                Error::Unsupported(format!(
                    "cuda:{ordinal} ({name}) has compute capability {major}.{minor}; \
                     medregion's kernels need 8.0 or newer"
                ))
            })?;
            image_desc = image.describe();
            let module = match image {
                kernels::Image::Cubin(_, bytes) => {
                    ctx.load_module(cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()))
                }
                kernels::Image::Ptx(bytes) => {
                    let text =
                        std::str::from_utf8(bytes.strip_suffix(&[0]).unwrap_or(bytes)).map_err(|_| {
                            Error::Internal(format!("embedded PTX of {} is not text", family.name))
                        })?;
                    ctx.load_module(cudarc::nvrtc::Ptx::from_src(text))
                }
            }
            .map_err(|e| {
                driver_error(&format!("loading kernels/{}.cu ({})", family.name, image.describe()), e)
            })?;
            for &k in family.kernels {
                let f = module.load_function(k).map_err(|e| driver_error(&format!("kernel {k}"), e))?;
                functions.insert(k, f);
            }
            modules.push(module);
        }
        Ok(Gpu { ctx, stream, ordinal, name, capability, image: image_desc, functions, _modules: modules })
    }

    /// A handle on the same device, context and loaded kernels with a stream of its own (a
    /// decoder session's). Buffers written on another handle's stream must be synchronised
    /// (e.g. [`Gpu::sync`] after an upload) before this one reads them.
    pub fn with_new_stream(&self) -> Result<Arc<Gpu>> {
        let stream = self.ctx.new_stream().map_err(|e| driver_error("stream", e))?;
        Ok(Arc::new(Gpu {
            ctx: Arc::clone(&self.ctx),
            stream,
            ordinal: self.ordinal,
            name: self.name.clone(),
            capability: self.capability,
            image: self.image.clone(),
            functions: self.functions.clone(),
            _modules: self._modules.clone(),
        }))
    }

    /// The device's ordinal (the N of `cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability `(major, minor)`.
    pub fn capability(&self) -> (u32, u32) {
        self.capability
    }

    /// Which embedded image was loaded (`"sm_90"`, or the PTX).
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The context (for cuBLAS handles, graphs and further streams).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A kernel by its `extern "C"` name.
    pub fn function(&self, name: &str) -> Result<CudaFunction> {
        self.functions.get(name).cloned().ok_or_else(|| {
            Error::NotFound(format!("CUDA kernel `{name}` (not in kernels/*.cu of this build)"))
        })
    }

    /// Copies `host` to a new device buffer (enqueued on the stream).
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(|e| driver_error("upload", e))
    }

    /// A new zeroed device buffer of `n` elements.
    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(n).map_err(|e| driver_error(&format!("allocating {n} elements"), e))
    }

    /// Copies `dev` to the host after everything enqueued before it (the copy is ordered on the
    /// stream; the one wait afterwards also reports an earlier kernel's fault).
    pub fn download<T: DeviceRepr, S: DevicePtr<T>>(&self, dev: &S) -> Result<Vec<T>> {
        let v = self.stream.clone_dtoh(dev).map_err(|e| driver_error("download", e))?;
        self.sync()?;
        Ok(v)
    }

    /// Waits until everything enqueued on the stream has run; reports a kernel's fault.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| driver_error("stream synchronize", e))
    }
}

impl Gpu {
    /// Milliseconds per run of `f` (which enqueues work on [`Gpu::stream`]), timed with CUDA
    /// events around `iters` runs after `warmup` untimed ones. For benchmarks.
    pub fn time_ms(&self, warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..warmup {
            f()?;
        }
        self.sync()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(timing).map_err(|e| driver_error("event", e))?;
        let end = self.ctx.new_event(timing).map_err(|e| driver_error("event", e))?;
        start.record(&self.stream).map_err(|e| driver_error("event record", e))?;
        for _ in 0..iters.max(1) {
            f()?;
        }
        end.record(&self.stream).map_err(|e| driver_error("event record", e))?;
        let ms = start.elapsed_ms(&end).map_err(|e| driver_error("event elapsed", e))?;
        Ok(ms as f64 / iters.max(1) as f64)
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second) over a
    /// `bytes`-sized buffer: the memory-bound kernels' yardstick.
    pub fn copy_bandwidth_gbs(&self, bytes: usize) -> Result<f64> {
        let src = self.alloc::<u8>(bytes)?;
        let mut dst = self.alloc::<u8>(bytes)?;
        let ms = self.time_ms(3, 20, || {
            self.stream.memcpy_dtod(&src, &mut dst).map_err(|e| driver_error("copy", e))
        })?;
        Ok(2.0 * bytes as f64 / (ms * 1e-3) / 1e9)
    }
}

/// A size as the `int` a kernel takes, or an error naming it.
pub fn to_i32(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(name, format!("{v} is too large for a CUDA kernel (max {})", i32::MAX)))
}

/// Checks that device buffer `what` holds at least `needed` elements.
pub fn check_len<T>(what: &str, buf: &impl DeviceSlice<T>, needed: usize) -> Result<()> {
    if buf.len() < needed {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("at least {needed} elements"),
            found: format!("{} elements", buf.len()),
        });
    }
    Ok(())
}
