//! Build script. Without the `cuda` feature it does nothing.
//!
//! With `--features cuda` it compiles every `kernels/*.cu` with NVRTC (no GPU or CUDA toolkit
//! needed: the PyPI package `nvidia-cuda-nvrtc-cu12` is enough) into CUBIN for each of
//! [`ARCHS`] plus one PTX for [`PTX_ARCH`], and writes `$OUT_DIR/kernels.rs`, which
//! `src/backend/cuda/kernels.rs` includes: the images are embedded in the library, so a
//! deployment needs only the driver. The ptxas statistics of every kernel (registers, stack,
//! spills) are embedded too, and written to `$OUT_DIR/ptxas-stats.txt`.
//!
//! The build fails, with the compiler's log, on a compile error, on a kernel that is not
//! `extern "C"`, on a kernel name defined in two families, and on any register spill: every
//! kernel is in some hot path, so none may spill.
//!
//! NVRTC is looked up in this order: `$MEDREGION_NVRTC` (the library file); the PyPI package
//! (`python3 -c 'import nvidia.cuda_nvrtc'`, python from `$PYTHON` or `python3`); `$CUDA_PATH`,
//! `$CUDA_HOME`, `/usr/local/cuda` (`lib64/libnvrtc.so*`); the dynamic loader's own search.

/// Real architectures shipped as CUBIN (A100, A10/RTX 30xx, L4/L40/RTX 40xx, H100/H200).
const ARCHS: [&str; 4] = ["sm_80", "sm_86", "sm_89", "sm_90"];
/// The virtual architecture of the PTX fallback (JIT-compiled by the driver on newer GPUs).
const PTX_ARCH: &str = "compute_80";
/// Keep in step with scripts/cuda/nvrtc_check.py. `--fmad=false`: products and sums are only
/// fused where a kernel writes `fmaf`, so kernels can reproduce the CPU's order of operations.
const NVRTC_OPTIONS: [&str; 3] = ["--std=c++17", "--fmad=false", "-lineinfo"];

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        if let Err(e) = cuda::build() {
            // A build script reports errors by failing; the message is what the user reads.
            eprintln!("\nerror: compiling the CUDA kernels failed:\n{e}\n");
            std::process::exit(1);
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::{ARCHS, NVRTC_OPTIONS, PTX_ARCH};
    use std::env;
    use std::fmt::Write as _;
    use std::fs;
    use std::path::{Path, PathBuf};

    use std::ffi::{c_char, c_int, c_void, CStr, CString};

    type Prog = *mut c_void;
    type CreateFn = unsafe extern "C" fn(
        *mut Prog,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int;
    type CompileFn = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
    type SizeFn = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
    type GetFn = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
    type DestroyFn = unsafe extern "C" fn(*mut Prog) -> c_int;
    type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

    /// The NVRTC entry points this build uses.
    struct Nvrtc {
        _lib: libloading::Library,
        path: PathBuf,
        version: (i32, i32),
        create: CreateFn,
        compile: CompileFn,
        log_size: SizeFn,
        log: GetFn,
        cubin_size: SizeFn,
        cubin: GetFn,
        ptx_size: SizeFn,
        ptx: GetFn,
        destroy: DestroyFn,
    }

    /// One compiled target of one family.
    struct Output {
        arch: &'static str,
        image: Vec<u8>,
        log: String,
    }

    /// ptxas statistics of one kernel on one arch.
    struct Stat {
        family: String,
        kernel: String,
        arch: String,
        registers: u32,
        stack: u32,
        spill_stores: u32,
        spill_loads: u32,
    }

    pub(super) fn build() -> Result<(), String> {
        let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
        let kdir = root.join("kernels");
        println!("cargo:rerun-if-changed={}", kdir.display());
        for var in ["MEDREGION_NVRTC", "PYTHON", "CUDA_PATH", "CUDA_HOME"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let mut sources: Vec<PathBuf> = fs::read_dir(&kdir)
            .map_err(|e| format!("cannot list {}: {e}", kdir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu" || x == "cuh"))
            .collect();
        sources.sort();
        for s in &sources {
            println!("cargo:rerun-if-changed={}", s.display());
        }
        let families: Vec<PathBuf> =
            sources.into_iter().filter(|p| p.extension().is_some_and(|x| x == "cu")).collect();

        let nvrtc = Nvrtc::find()?;
        let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("kernels");
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

        // Compile every (family, target) on a few threads; NVRTC programs are independent.
        let targets: Vec<&'static str> = ARCHS.iter().copied().chain([PTX_ARCH]).collect();
        let jobs: Vec<(usize, &'static str)> =
            (0..families.len()).flat_map(|f| targets.iter().map(move |&t| (f, t))).collect();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<(usize, Result<Output, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&(f, arch)) = jobs.get(i) else { break };
                            done.push((i, nvrtc.compile(&families[f], &kdir, arch)));
                        }
                        done
                    })
                })
                .collect();
            let mut all: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
            all.sort_by_key(|(i, _)| *i);
            all
        });
        if results.len() != jobs.len() {
            return Err("an NVRTC compile thread panicked".into());
        }

        let mut errors = Vec::new();
        let mut stats: Vec<Stat> = Vec::new();
        let mut code = String::new();
        let _ = writeln!(code, "// Generated by build.rs from kernels/*.cu with {}.", nvrtc.path.display());
        let _ = writeln!(
            code,
            "pub const NVRTC_VERSION: (i32, i32) = ({}, {});",
            nvrtc.version.0, nvrtc.version.1
        );
        let _ = writeln!(code, "pub const PTX_ARCH: u32 = {};", arch_number(PTX_ARCH));
        let _ = writeln!(code, "pub static FAMILIES: &[Family] = &[");
        let mut owner: std::collections::BTreeMap<String, String> = Default::default();
        for (f, path) in families.iter().enumerate() {
            let family = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
            let mut kernels: Vec<String> = Vec::new();
            let mut cubins = String::new();
            let mut ptx_file = None;
            for (j, &arch) in targets.iter().enumerate() {
                let (_, result) = &results[f * targets.len() + j];
                let o = match result {
                    Ok(o) => o,
                    Err(e) => {
                        // One log per family: the other targets fail the same way.
                        if !errors.iter().any(|m: &String| m.starts_with(&format!("kernels/{family}.cu ["))) {
                            errors.push(format!("kernels/{family}.cu [{arch}]: {e}"));
                        }
                        continue;
                    }
                };
                let file =
                    out.join(format!("{family}.{arch}.{}", if o.arch == PTX_ARCH { "ptx" } else { "cubin" }));
                fs::write(&file, &o.image).map_err(|e| format!("{}: {e}", file.display()))?;
                if o.arch == PTX_ARCH {
                    ptx_file = Some(file);
                    continue;
                }
                for st in parse_stats(&o.log, &family, arch) {
                    if st.kernel.starts_with("_Z") {
                        errors.push(format!(
                            "kernels/{family}.cu: kernel `{}` is not `extern \"C\"` (its name is mangled)",
                            st.kernel
                        ));
                    }
                    if st.spill_stores > 0 || st.spill_loads > 0 {
                        errors.push(format!(
                            "kernels/{family}.cu [{arch}]: kernel `{}` spills registers ({} bytes stored, {} loaded; {} registers)",
                            st.kernel, st.spill_stores, st.spill_loads, st.registers
                        ));
                    }
                    if !kernels.contains(&st.kernel) {
                        kernels.push(st.kernel.clone());
                    }
                    stats.push(st);
                }
                let _ = write!(
                    cubins,
                    "({}, include_bytes!({:?}) as &[u8]), ",
                    arch_number(arch),
                    file.display()
                );
            }
            for k in &kernels {
                if let Some(prev) = owner.insert(k.clone(), family.clone()) {
                    errors.push(format!(
                        "kernel `{k}` is defined in both kernels/{prev}.cu and kernels/{family}.cu"
                    ));
                }
            }
            let ptx = match ptx_file {
                Some(p) => format!("include_bytes!({:?})", p.display()),
                None => "b\"\\0\"".to_string(),
            };
            let _ = writeln!(
                code,
                "    Family {{ name: {family:?}, kernels: &{kernels:?}, cubins: &[{cubins}], ptx: {ptx} }},"
            );
        }
        let _ = writeln!(code, "];");
        let _ = writeln!(code, "pub static PTXAS_STATS: &[KernelStats] = &[");
        let mut table = String::from(
            "family               arch   kernel                                   regs stack spill(st/ld)\n",
        );
        for s in &stats {
            let _ = writeln!(
                code,
                "    KernelStats {{ family: {:?}, kernel: {:?}, arch: {}, registers: {}, stack_bytes: {}, spill_stores: {}, spill_loads: {} }},",
                s.family, s.kernel, arch_number(&s.arch), s.registers, s.stack, s.spill_stores, s.spill_loads
            );
            let _ = writeln!(
                table,
                "{:20} {:6} {:40} {:4} {:5} {}/{}",
                s.family, s.arch, s.kernel, s.registers, s.stack, s.spill_stores, s.spill_loads
            );
        }
        let _ = writeln!(code, "];");
        let stats_file = out.join("ptxas-stats.txt");
        fs::write(&stats_file, &table).map_err(|e| format!("{}: {e}", stats_file.display()))?;
        if !errors.is_empty() {
            return Err(errors.join("\n\n"));
        }
        let gen = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("kernels.rs");
        fs::write(&gen, code).map_err(|e| format!("{}: {e}", gen.display()))?;
        Ok(())
    }

    /// `sm_86` / `compute_80` -> 86 / 80.
    fn arch_number(arch: &str) -> u32 {
        arch.rsplit('_').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Kernel statistics from a `-Xptxas=-v` log.
    fn parse_stats(log: &str, family: &str, arch: &str) -> Vec<Stat> {
        let mut out: Vec<Stat> = Vec::new();
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                let kernel = rest.split('\'').next().unwrap_or("?").to_string();
                out.push(Stat {
                    family: family.to_string(),
                    kernel,
                    arch: arch.to_string(),
                    registers: 0,
                    stack: 0,
                    spill_stores: 0,
                    spill_loads: 0,
                });
                continue;
            }
            let Some(cur) = out.last_mut() else { continue };
            let words: Vec<&str> = line.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                let num = || i.checked_sub(2).and_then(|j| words[j].parse::<u32>().ok());
                let num1 = || i.checked_sub(1).and_then(|j| words[j].parse::<u32>().ok());
                match (*w, words.get(i + 1).copied()) {
                    ("stack", Some("frame,")) => cur.stack = num().unwrap_or(0),
                    ("spill", Some("stores,")) => cur.spill_stores = num().unwrap_or(0),
                    ("spill", Some("loads")) => cur.spill_loads = num().unwrap_or(0),
                    ("registers,", _) | ("registers", _) => {
                        if let Some(n) = num1() {
                            cur.registers = n;
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    impl Nvrtc {
        fn find() -> Result<Nvrtc, String> {
            let mut tried = Vec::new();
            for cand in candidates() {
                // SAFETY: loading NVRTC runs no initialisers with preconditions.
                match unsafe { libloading::Library::new(&cand) } {
                    Ok(lib) => return Nvrtc::from_lib(lib, cand),
                    Err(e) => tried.push(format!("  {}: {e}", cand.display())),
                }
            }
            Err(format!(
                "NVRTC (the CUDA runtime compiler) was not found; `--features cuda` needs it to compile \
                 kernels/*.cu (no GPU or CUDA toolkit is needed).\n\
                 Install it with:   python3 -m pip install nvidia-cuda-nvrtc-cu12\n\
                 or point MEDREGION_NVRTC at libnvrtc.so.\nTried:\n{}",
                tried.join("\n")
            ))
        }

        fn from_lib(lib: libloading::Library, path: PathBuf) -> Result<Nvrtc, String> {
            // SAFETY: the symbols are NVRTC's C API; the types match its header (nvrtc.h).
            unsafe {
                let sym = |name: &str| -> Result<*const c_void, String> {
                    lib.get::<*const c_void>(name.as_bytes())
                        .map(|s| *s)
                        .map_err(|e| format!("{}: missing {name}: {e}", path.display()))
                };
                let version: VersionFn = std::mem::transmute(sym("nvrtcVersion")?);
                let (mut major, mut minor) = (0, 0);
                version(&mut major, &mut minor);
                let n = Nvrtc {
                    create: std::mem::transmute::<*const c_void, CreateFn>(sym("nvrtcCreateProgram")?),
                    compile: std::mem::transmute::<*const c_void, CompileFn>(sym("nvrtcCompileProgram")?),
                    log_size: std::mem::transmute::<*const c_void, SizeFn>(sym("nvrtcGetProgramLogSize")?),
                    log: std::mem::transmute::<*const c_void, GetFn>(sym("nvrtcGetProgramLog")?),
                    cubin_size: std::mem::transmute::<*const c_void, SizeFn>(sym("nvrtcGetCUBINSize")?),
                    cubin: std::mem::transmute::<*const c_void, GetFn>(sym("nvrtcGetCUBIN")?),
                    ptx_size: std::mem::transmute::<*const c_void, SizeFn>(sym("nvrtcGetPTXSize")?),
                    ptx: std::mem::transmute::<*const c_void, GetFn>(sym("nvrtcGetPTX")?),
                    destroy: std::mem::transmute::<*const c_void, DestroyFn>(sym("nvrtcDestroyProgram")?),
                    version: (major, minor),
                    path,
                    _lib: lib,
                };
                if major < 12 {
                    return Err(format!(
                        "{} is NVRTC {major}.{minor}; CUDA 12 or newer is needed \
                         (python3 -m pip install nvidia-cuda-nvrtc-cu12)",
                        n.path.display()
                    ));
                }
                Ok(n)
            }
        }

        /// Compiles one source for one target: CUBIN for `sm_*`, PTX for `compute_*`.
        fn compile(&self, path: &Path, include: &Path, arch: &'static str) -> Result<Output, String> {
            let src = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let c_src = CString::new(src).map_err(|_| "the source contains a NUL byte".to_string())?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("kernel.cu");
            let c_name = CString::new(name).map_err(|e| e.to_string())?;
            let mut opts: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
            opts.push(format!("-arch={arch}"));
            opts.push(format!("--include-path={}", include.display()));
            if arch.starts_with("sm_") {
                opts.push("-Xptxas=-v".to_string());
            }
            let c_opts: Vec<CString> = opts.iter().filter_map(|o| CString::new(o.as_str()).ok()).collect();
            let p_opts: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
            let mut prog: Prog = std::ptr::null_mut();
            // SAFETY: NVRTC calls with valid NUL-terminated strings and out-pointers; the program
            // is destroyed on every path below.
            unsafe {
                let rc = (self.create)(
                    &mut prog,
                    c_src.as_ptr(),
                    c_name.as_ptr(),
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                );
                if rc != 0 {
                    return Err(format!("nvrtcCreateProgram failed ({rc})"));
                }
                let rc = (self.compile)(prog, p_opts.len() as c_int, p_opts.as_ptr());
                let log = self.get(prog, self.log_size, self.log).map(|b| {
                    CStr::from_bytes_until_nul(&b)
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                let image = if rc == 0 {
                    if arch.starts_with("sm_") {
                        self.get(prog, self.cubin_size, self.cubin)
                    } else {
                        self.get(prog, self.ptx_size, self.ptx) // NUL-terminated, as cuModuleLoadData wants
                    }
                } else {
                    Err(String::new())
                };
                (self.destroy)(&mut prog);
                let log = log.unwrap_or_default();
                match image {
                    Ok(image) if !image.is_empty() => Ok(Output { arch, image, log }),
                    Ok(_) => Err(format!("NVRTC produced an empty image\n{log}")),
                    Err(_) => Err(format!("compile error (NVRTC {rc}):\n{log}")),
                }
            }
        }

        /// Reads one NVRTC output buffer.
        unsafe fn get(&self, prog: Prog, size: SizeFn, get: GetFn) -> Result<Vec<u8>, String> {
            let mut n = 0usize;
            // SAFETY: forwarded; `buf` has the size NVRTC reported.
            unsafe {
                let rc = size(prog, &mut n);
                if rc != 0 {
                    return Err(format!("NVRTC size query failed ({rc})"));
                }
                let mut buf = vec![0u8; n];
                let rc = get(prog, buf.as_mut_ptr().cast());
                if rc != 0 {
                    return Err(format!("NVRTC output query failed ({rc})"));
                }
                Ok(buf)
            }
        }
    }

    /// Library files to try, most specific first.
    fn candidates() -> Vec<PathBuf> {
        let mut v = Vec::new();
        if let Some(p) = env::var_os("MEDREGION_NVRTC") {
            return vec![PathBuf::from(p)];
        }
        let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        let probe = "import importlib.util as u\n\
                     s = u.find_spec('nvidia') and u.find_spec('nvidia.cuda_nvrtc')\n\
                     print('\\n'.join(s.submodule_search_locations) if s else '')";
        if let Ok(out) = std::process::Command::new(&python).args(["-c", probe]).output() {
            for dir in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                v.extend(lib_files(&Path::new(dir).join("lib")));
            }
        }
        for var in ["CUDA_PATH", "CUDA_HOME"] {
            if let Some(d) = env::var_os(var) {
                v.extend(lib_files(&Path::new(&d).join("lib64")));
            }
        }
        v.extend(lib_files(Path::new("/usr/local/cuda/lib64")));
        v.extend(["libnvrtc.so.12", "libnvrtc.so.13", "libnvrtc.so"].map(PathBuf::from));
        v
    }

    /// `libnvrtc.so*` in `dir` (not the builtins or the `.alt` variant), newest name first.
    fn lib_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        n.starts_with("libnvrtc.so") && !n.contains(".alt.")
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.reverse();
        v
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    // Keeps the shared constants used when the feature is off.
    const _: (&[&str], &str, &[&str]) = (&super::ARCHS, super::PTX_ARCH, &super::NVRTC_OPTIONS);

    pub(super) fn build() -> Result<(), String> {
        Ok(())
    }
}
