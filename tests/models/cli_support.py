"""Helpers of the model tests: a tiny GGUF built in code, the CLI in a subprocess.

(Not in conftest.py: test modules import these by name, and "conftest" is the
name of several modules in this suite.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def tiny_gguf(name: str, *, quant: int = 15, rows: int = 16) -> bytes:
    """A small well-formed GGUF (two tensors, the first ``rows`` x 8 float32): enough
    for the listing, the integrity check and the planner, not meant to generate."""
    import numpy as np
    from gguf import GGUFWriter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.gguf"
        writer = GGUFWriter(str(path), "llama")
        writer.add_name(name)
        writer.add_file_type(quant)
        writer.add_block_count(1)
        writer.add_context_length(128)
        writer.add_embedding_length(8)
        writer.add_feed_forward_length(16)
        writer.add_head_count(2)
        writer.add_tensor("token_embd.weight", np.zeros((rows, 8), dtype=np.float32))
        writer.add_tensor("output.weight", np.ones((16, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def starchart(*args: str, home: Path, hf: Path, stdin: str | None = None,
              **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess with its own STARCHART_HOME and HF cache."""
    full = {**os.environ, "STARCHART_HOME": str(home), "HF_HOME": str(hf),
            "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True,
                          text=True, timeout=120, env=full, input=stdin or "", check=False)
