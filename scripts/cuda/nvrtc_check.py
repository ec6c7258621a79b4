#!/usr/bin/env python3
"""Compile kernels/*.cu with NVRTC for every target arch, the way build.rs does, and print the
ptxas statistics (registers, stack, spills) of every kernel. No GPU needed.

    python3 scripts/cuda/nvrtc_check.py                 # every kernels/*.cu
    python3 scripts/cuda/nvrtc_check.py kernels/rope.cu # some

NVRTC is found like build.rs finds it: $MEDREGION_NVRTC (the library file), else the PyPI package
`nvidia-cuda-nvrtc-cu12` (`python3 -m pip install nvidia-cuda-nvrtc-cu12`), else the usual toolkit
folders. Exit status 1 on a compile error or a register spill.

A quick check for developers; the build itself (build.rs, `--features cuda`) is what CI trusts.
"""
import ctypes
import glob
import importlib.util
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHS = ["sm_80", "sm_86", "sm_89", "sm_90"]
# Keep in step with build.rs (NVRTC_OPTIONS).
OPTIONS = ["--std=c++17", "--fmad=false", "-lineinfo", "-Xptxas=-v"]


def find_nvrtc():
    env = os.environ.get("MEDREGION_NVRTC")
    if env:
        return env
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc") if importlib.util.find_spec("nvidia") else None
    cands = []
    if spec is not None:
        for loc in spec.submodule_search_locations:
            cands += sorted(glob.glob(os.path.join(loc, "lib", "libnvrtc.so*")))
    for d in (os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"):
        if d:
            cands += sorted(glob.glob(os.path.join(d, "lib64", "libnvrtc.so*")))
    cands = [c for c in cands if ".alt." not in c and "builtins" not in c]
    if not cands:
        sys.exit("NVRTC not found: python3 -m pip install nvidia-cuda-nvrtc-cu12, or set MEDREGION_NVRTC")
    return cands[0]


def compile_one(lib, path, arch):
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None)
    assert rc == 0, rc
    opts = OPTIONS + [f"-arch={arch}", f"--include-path={os.path.join(ROOT, 'kernels')}"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, buf)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, buf.value.decode(errors="replace")


STAT_RE = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")


def parse(log):
    """{kernel: (registers, stack, spill_stores, spill_loads)} from a ptxas -v log."""
    out, cur = {}, None
    for line in log.splitlines():
        m = STAT_RE.search(line)
        if m:
            cur = m.group(1)
            out[cur] = [0, 0, 0, 0]
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[cur][1:4] = [int(m.group(i)) for i in (1, 2, 3)]
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[cur][0] = int(m.group(1))
    return out


def main():
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "kernels", "*.cu")))
    lib = ctypes.CDLL(find_nvrtc())
    bad = False
    for path in files:
        for arch in ARCHS:
            rc, log = compile_one(lib, path, arch)
            if rc != 0:
                print(f"{path} [{arch}]: compile error\n{log}")
                bad = True
                break
            for name, (regs, stack, ss, sl) in parse(log).items():
                flag = "  SPILL" if ss or sl else ""
                bad |= bool(flag)
                print(f"{os.path.basename(path):20} {arch}  {name:40} regs {regs:3}  stack {stack:4}  spill {ss}/{sl}{flag}")
            if "warning" in log:
                print("\n".join(l for l in log.splitlines() if "warning" in l))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
