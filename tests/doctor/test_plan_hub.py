"""`starchart plan HUB_ID` and `doctor --model HUB_ID`: only config.json and the
safetensors headers (HTTP range requests) from a loopback server speaking the hub's
API; offline, the exact command that fetches that one file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hub_server import HubServer
from test_doctor_planner import TINY_LLAMA, count, llama_tensors, write_checkpoint

REPO = "tiny-org/tiny-llama"


def starchart(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "STARCHART_HOME": str(tmp_path / "home"),
            "HF_HOME": str(tmp_path / "hf"), **env}
    full.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "starchart", *args], capture_output=True,
                          text=True, timeout=120, env=full, check=False)


def repo_files(tmp_path: Path, *, weights: int = 5_000_000) -> dict[str, bytes]:
    folder = write_checkpoint(tmp_path / "src", TINY_LLAMA, llama_tensors(TINY_LLAMA))
    header = (folder / "model.safetensors").read_bytes()
    # The header, then weights the planner must never download.
    return {"config.json": (folder / "config.json").read_bytes(),
            "model.safetensors": header + b"\0" * weights}


def test_plan_of_a_hub_id_fetches_only_config_and_headers(tmp_path):
    with HubServer({REPO: repo_files(tmp_path)}) as hub:
        done = starchart("plan", REPO, "--json", tmp_path=tmp_path, HF_ENDPOINT=hub.url)
        requests = list(hub.requests)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    assert plan["model"]["source"] == "safetensors"
    assert plan["model"]["n_params"] == count(llama_tensors(TINY_LLAMA))
    # (huggingface_hub also asks the endpoint for things of its own, outside the repo.)
    fetched = {path.rsplit("/", 1)[1] for method, path, _ in requests
               if method == "GET" and "/resolve/" in path}
    assert fetched == {"config.json", "model.safetensors"}
    # The weights file only through range requests, never whole.
    assert all(rng and rng.startswith("bytes=") for method, path, rng in requests
               if method == "GET" and path.endswith(".safetensors"))
    # config.json is in the HF cache now: the next plan needs no network.
    again = starchart("plan", REPO, "--json", tmp_path=tmp_path, HF_HUB_OFFLINE="1")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["plan"]["model"]["architecture"] == "llama"


def test_offline_plan_and_doctor_print_the_fetch_command(tmp_path):
    expected = f"`hf download {REPO} config.json`"
    plan = starchart("plan", REPO, tmp_path=tmp_path, HF_HUB_OFFLINE="1")
    assert plan.returncode == 1 and expected in plan.stderr and "Traceback" not in plan.stderr
    doctor = starchart("doctor", "--model", REPO, tmp_path=tmp_path, HF_HUB_OFFLINE="1")
    assert doctor.returncode == 1 and expected in doctor.stderr


def test_unknown_hub_id_says_so(tmp_path):
    with HubServer({}) as hub:
        done = starchart("plan", "nobody/nothing", tmp_path=tmp_path, HF_ENDPOINT=hub.url)
    assert done.returncode == 1
    assert "no model 'nobody/nothing' on the Hugging Face hub" in done.stderr
