//! The kernels of `kernels/*.cu`, compiled by build.rs with NVRTC and embedded in the library:
//! one CUBIN per shipped architecture (sm_80, sm_86, sm_89, sm_90) and one PTX (compute_80) per
//! family, plus the ptxas statistics of every kernel.

/// One kernel family (one `kernels/<name>.cu`).
#[derive(Debug)]
pub struct Family {
    /// File stem, e.g. `"rms_norm"`.
    pub name: &'static str,
    /// The `extern "C"` kernels it defines.
    pub kernels: &'static [&'static str],
    /// `(arch, cubin)`, arch as 80, 86, 89, 90.
    pub cubins: &'static [(u32, &'static [u8])],
    /// NUL-terminated PTX for [`PTX_ARCH`], JIT-compiled by the driver on other GPUs.
    pub ptx: &'static [u8],
}

/// ptxas statistics of one kernel for one architecture (`-Xptxas=-v`).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct KernelStats {
    pub family: &'static str,
    pub kernel: &'static str,
    pub arch: u32,
    pub registers: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Which embedded image a device of compute capability `major.minor` loads: the CUBIN of the
/// newest shipped architecture with the same major version and a minor version no newer than
/// the device's (CUBIN is compatible within a major version), else the PTX when the device is
/// at least [`PTX_ARCH`], else `None` (too old).
pub fn image_for(family: &Family, major: u32, minor: u32) -> Option<Image> {
    let dev = major * 10 + minor;
    let cubin = family
        .cubins
        .iter()
        .filter(|(a, _)| a / 10 == major && *a <= dev)
        .max_by_key(|(a, _)| *a)
        .map(|&(a, bytes)| Image::Cubin(a, bytes));
    cubin.or_else(|| (dev >= PTX_ARCH).then_some(Image::Ptx(family.ptx)))
}

/// An embedded image chosen by [`image_for`].
#[derive(Clone, Copy, Debug)]
pub enum Image {
    Cubin(u32, &'static [u8]),
    Ptx(&'static [u8]),
}

impl Image {
    /// `"sm_90"` or `"compute_80 (PTX, JIT)"`.
    pub fn describe(&self) -> String {
        match self {
            Image::Cubin(a, _) => format!("sm_{a}"),
            Image::Ptx(_) => format!("compute_{PTX_ARCH} (PTX, JIT)"),
        }
    }
}

/// The ptxas statistics as a text table (what `medregion info --kernels` prints).
pub fn stats_table() -> String {
    let mut s = format!(
        "{:20} {:5} {:44} {:>4} {:>6} {:>12}\n",
        "family", "arch", "kernel", "regs", "stack", "spill st/ld"
    );
    for k in PTXAS_STATS {
        s.push_str(&format!(
            "{:20} sm_{:<2} {:44} {:>4} {:>6} {:>5}/{:<6}\n",
            k.family, k.arch, k.kernel, k.registers, k.stack_bytes, k.spill_stores, k.spill_loads
        ));
    }
    s
}
