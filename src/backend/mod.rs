//! Compute devices. The CPU is always present; CUDA devices are listed when the library was built
//! with the `cuda` feature AND a driver is found at run time. When CUDA is not usable, one CUDA
//! entry is still listed with `available == false` and the reason (not compiled in, no driver,
//! no device), so a host can tell the user why the GPU is not used. Probing never fails hard.

use std::sync::OnceLock;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_probe;

/// Kind of a compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

/// One compute device, as reported by [`devices`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    /// Index among devices of the same kind (`cuda:N`); 0 for the CPU.
    pub ordinal: i32,
    /// Whether the device can be used now.
    pub available: bool,
    /// Why the device is not available (empty when it is).
    pub reason: String,
    /// Human-readable name (CPU model with SIMD features, or GPU name).
    pub name: String,
    /// Total memory in bytes (system RAM for the CPU), 0 when unknown.
    pub memory_bytes: u64,
    /// Hardware threads for the CPU, streaming multiprocessors for a GPU.
    pub compute_units: u32,
}

/// All devices, probed once per process (the result is cached).
pub fn devices() -> &'static [DeviceInfo] {
    static DEVICES: OnceLock<Vec<DeviceInfo>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let mut list = vec![cpu_info()];
        list.extend(cuda_devices());
        list
    })
}

fn cpu_info() -> DeviceInfo {
    let model =
        read_proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let feats = cpu_features();
    let name = if feats.is_empty() { model } else { format!("{model} ({})", feats.join(", ")) };
    let memory_bytes = read_proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    let compute_units = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    DeviceInfo {
        kind: DeviceKind::Cpu,
        ordinal: 0,
        available: true,
        reason: String::new(),
        name,
        memory_bytes,
        compute_units,
    }
}

/// SIMD features the CPU kernels can use, detected at run time.
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            v.push("avx2");
        }
        if std::is_x86_feature_detected!("fma") {
            v.push("fma");
        }
        if std::is_x86_feature_detected!("f16c") {
            v.push("f16c");
        }
        if std::is_x86_feature_detected!("avx512f") {
            v.push("avx512f");
        }
    }
    #[cfg(target_arch = "aarch64")]
    v.push("neon");
    v
}

fn read_proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn unavailable_cuda(reason: String) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::Cuda,
        ordinal: 0,
        available: false,
        reason,
        name: "CUDA".to_string(),
        memory_bytes: 0,
        compute_units: 0,
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices() -> Vec<DeviceInfo> {
    vec![unavailable_cuda(
        "this build of medregion has no CUDA support (rebuild with `--features cuda`)".to_string(),
    )]
}

#[cfg(feature = "cuda")]
fn cuda_devices() -> Vec<DeviceInfo> {
    // The probe touches dynamically loaded libraries; keep a panic boundary around it anyway.
    match std::panic::catch_unwind(cuda_probe::probe) {
        Ok(Ok(list)) if !list.is_empty() => list,
        Ok(Ok(_)) => vec![unavailable_cuda("the CUDA driver reports no device".to_string())],
        Ok(Err(reason)) => vec![unavailable_cuda(reason)],
        Err(_) => vec![unavailable_cuda("the CUDA probe failed unexpectedly (caught panic)".to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_first_and_available() {
        let d = devices();
        assert_eq!(d[0].kind, DeviceKind::Cpu);
        assert!(d[0].available);
        assert!(d[0].compute_units >= 1);
        assert!(d[0].reason.is_empty());
    }

    #[test]
    fn cuda_entry_explains_itself_when_unavailable() {
        for dev in devices().iter().filter(|d| d.kind == DeviceKind::Cuda && !d.available) {
            assert!(!dev.reason.is_empty(), "an unavailable device must say why");
        }
    }
}
