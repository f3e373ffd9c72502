"""`starchart models pull` against a loopback server speaking the hub's API
(HF_ENDPOINT): only the needed files land in the HF cache, with progress; a
dropped connection resumes; :QUANT picks one GGUF; pickle, corrupt files,
unknown and gated repos, no network: one clear line and a non-zero exit."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from cli_support import starchart, tiny_gguf
from hub_server import COMMIT, HubServer

GGUF_REPO = "tiny-org/tiny-gguf"
LLAMA_REPO = "tiny-org/tiny-llama"
QUANTS = {"tiny-Q4_K_M.gguf": 15, "tiny-Q4_K_S.gguf": 14, "tiny-Q8_0.gguf": 7,
          "tiny-IQ4_K_M.gguf": 15}


@pytest.fixture(scope="module")
def repos(tiny_checkpoint: Path) -> dict[str, dict[str, bytes]]:
    ggufs = {name: tiny_gguf(name, quant=q) for name, q in QUANTS.items()}
    checkpoint = {p.name: p.read_bytes() for p in tiny_checkpoint.iterdir() if p.is_file()}
    assert "model.safetensors" in checkpoint and "config.json" in checkpoint
    extras = {"README.md": b"# tiny", "modeling_tiny.py": b"import os\n",
              "pytorch_model.bin": b"pickle!", "onnx/model.onnx": b"onnx"}
    pickled = {"config.json": checkpoint["config.json"], "pytorch_model.bin": b"\x80\x04pickle"}
    whole = tiny_gguf("broken")
    return {GGUF_REPO: {**ggufs, "README.md": b"# gguf"},
            LLAMA_REPO: {**checkpoint, **extras},
            "tiny-org/pickled": pickled,
            "tiny-org/broken-gguf": {"broken.gguf": whole[:-100]},
            "tiny-org/gated": {"gated-Q4_K_M.gguf": tiny_gguf("gated")},
            # Over huggingface_hub's 10 MB read size, so a cut half-way has written some.
            "tiny-org/big": {"big.gguf": tiny_gguf("big", rows=750_000)}}


def cached(hf: Path, repo: str) -> dict[str, bytes]:
    """The files of ``repo`` in the HF cache's snapshot of COMMIT."""
    snap = hf / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / COMMIT
    if not snap.is_dir():
        return {}
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*")
            if p.is_file()}


def names(home: Path) -> dict[str, dict]:
    path = home / "models.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def test_a_quant_pattern_pulls_that_one_gguf_with_progress(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos) as hub:
        done = starchart("models", "pull", f"{GGUF_REPO}:q4_k_m", home=home, hf=hf,
                         HF_ENDPOINT=hub.url)
        fetched = {p.rsplit("/", 1)[1] for m, p, _ in hub.requests
                   if m == "GET" and "/resolve/" in p}
    assert done.returncode == 0, done.stderr
    # Q4_K_M, case-insensitively, as a whole token: not Q4_K_S, not IQ4_K_M.
    assert fetched == {"tiny-Q4_K_M.gguf"}
    assert cached(hf, GGUF_REPO) == {"tiny-Q4_K_M.gguf": repos[GGUF_REPO]["tiny-Q4_K_M.gguf"]}
    assert "tiny-Q4_K_M.gguf" in done.stderr and "100%" in done.stderr  # the progress bar
    assert f"starchart serve --model {GGUF_REPO}:q4_k_m" in done.stdout
    assert names(home)[f"{GGUF_REPO}:q4_k_m"] == {"source": f"{GGUF_REPO}:q4_k_m",
                                                  "revision": COMMIT}
    # Cached now: serving resolves it without the network.
    listed = starchart("models", "list", "--json", home=home, hf=hf, HF_HUB_OFFLINE="1")
    row = {r["name"]: r for r in json.loads(listed.stdout)}[f"{GGUF_REPO}:q4_k_m"]
    assert row["quantization"] == "Q4_K_M" and row["engine"] == "llamacpp"
    assert row["size"] == len(repos[GGUF_REPO]["tiny-Q4_K_M.gguf"])


@pytest.mark.parametrize(("ref", "says"), [
    (f"{GGUF_REPO}:Q5_K_M", "matches no GGUF file"),
    (f"{GGUF_REPO}:Q4_K", "matches no GGUF file"),
    (GGUF_REPO, "several GGUF files"),
])
def test_a_pattern_matching_none_or_several_lists_the_files(tmp_path, repos, ref, says):
    with HubServer(repos) as hub:
        done = starchart("models", "pull", ref, home=tmp_path / "home", hf=tmp_path / "hf",
                         HF_ENDPOINT=hub.url)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert says in done.stderr
    for name in QUANTS:
        assert name in done.stderr
    assert not cached(tmp_path / "hf", GGUF_REPO)


def test_a_checkpoint_pulls_weights_config_and_tokenizer_only(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos) as hub:
        done = starchart("models", "pull", LLAMA_REPO, home=home, hf=hf, HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    files = cached(hf, LLAMA_REPO)
    assert {"model.safetensors", "config.json", "generation_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= set(files)
    # No code, no pickle next to the safetensors, no other formats, no docs.
    assert not {"modeling_tiny.py", "pytorch_model.bin", "onnx/model.onnx",
                "README.md"} & set(files)
    assert "--engine transformers" in done.stdout


def test_a_dropped_connection_resumes_where_it_stopped(tmp_path, repos):
    hf = tmp_path / "hf"
    whole = repos["tiny-org/big"]["big.gguf"]
    with HubServer(repos, cut_once={"big.gguf"}) as hub:
        done = starchart("models", "pull", "tiny-org/big", home=tmp_path / "home", hf=hf,
                         HF_ENDPOINT=hub.url)
        ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("big.gguf")]
    assert done.returncode == 0, done.stderr
    # The first GET stopped half-way; the second asked only for what was missing.
    assert len(ranges) == 2 and ranges[0] is None
    start = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(whole) // 2
    got = cached(hf, "tiny-org/big")["big.gguf"]
    assert hashlib.sha256(got).digest() == hashlib.sha256(whole).digest()


def test_a_second_pull_fetches_nothing_again(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos) as hub:
        starchart("models", "pull", f"{GGUF_REPO}:Q8_0", home=home, hf=hf, HF_ENDPOINT=hub.url)
        hub.requests.clear()
        again = starchart("models", "pull", f"{GGUF_REPO}:Q8_0", home=home, hf=hf,
                          HF_ENDPOINT=hub.url)
        gets = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert again.returncode == 0, again.stderr
    assert gets == [] and "(0.00 GB to download)" in again.stderr


def test_pickle_weights_are_refused_unless_allowed(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos) as hub:
        refused = starchart("models", "pull", "tiny-org/pickled", home=home, hf=hf,
                            HF_ENDPOINT=hub.url)
        gets = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
        allowed = starchart("models", "pull", "tiny-org/pickled", "--allow-pickle", home=home,
                            hf=hf, HF_ENDPOINT=hub.url)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "pytorch_model.bin" in refused.stderr and "--allow-pickle" in refused.stderr
    assert gets == []  # refused before a byte moved
    assert allowed.returncode == 0, allowed.stderr
    assert "pytorch_model.bin" in cached(hf, "tiny-org/pickled")
    assert names(home)["tiny-org/pickled"]["allow_pickle"] is True


def test_a_corrupt_file_is_rejected_named_and_not_kept(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos) as hub:
        done = starchart("models", "pull", "tiny-org/broken-gguf", home=home, hf=hf,
                         HF_ENDPOINT=hub.url)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "broken.gguf is truncated" in done.stderr
    assert not cached(hf, "tiny-org/broken-gguf")
    assert names(home) == {}


def test_not_enough_disk_is_said_before_downloading(tmp_path, repos):
    with HubServer(repos, claimed_sizes={"tiny-Q8_0.gguf": 10**16}) as hub:
        done = starchart("models", "pull", f"{GGUF_REPO}:Q8_0", home=tmp_path / "home",
                         hf=tmp_path / "hf", HF_ENDPOINT=hub.url)
        gets = [p for m, p, _ in hub.requests if "/resolve/" in p]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "needs 10000000.0 GB of disk" in done.stderr and "free" in done.stderr
    assert gets == []


def test_unknown_and_gated_repos_say_so_in_one_line(tmp_path, repos):
    home, hf = tmp_path / "home", tmp_path / "hf"
    with HubServer(repos, gated={"tiny-org/gated": "hf_secret"}) as hub:
        unknown = starchart("models", "pull", "nobody/nothing", home=home, hf=hf,
                            HF_ENDPOINT=hub.url)
        gated = starchart("models", "pull", "tiny-org/gated", home=home, hf=hf,
                          HF_ENDPOINT=hub.url)
        opened = starchart("models", "pull", "tiny-org/gated", home=home, hf=hf,
                           HF_ENDPOINT=hub.url, HF_TOKEN="hf_secret")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        f"starchart: no model nobody/nothing on the Hugging Face hub ({hub.url}); if it is"
        " private, set HF_TOKEN"]
    assert gated.returncode == 1 and len(gated.stderr.strip().splitlines()) == 1
    assert "tiny-org/gated is gated" in gated.stderr and "HF_TOKEN" in gated.stderr
    assert opened.returncode == 0, opened.stderr


def test_offline_or_unreachable_hub_is_one_line(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    offline = starchart("models", "pull", GGUF_REPO, home=tmp_path / "home", hf=tmp_path / "hf",
                        HF_HUB_OFFLINE="1")
    unreachable = starchart("models", "pull", GGUF_REPO, home=tmp_path / "home",
                            hf=tmp_path / "hf", HF_ENDPOINT=closed)
    for done in (offline, unreachable):
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "HF_HUB_OFFLINE is set" in offline.stderr
    assert f"cannot reach the Hugging Face hub at {closed}" in unreachable.stderr


@pytest.mark.parametrize("ref", ["../etc/passwd", "/abs/path", "org/name/../x", "justaname"])
def test_a_repository_must_look_like_one(tmp_path, ref):
    done = starchart("models", "pull", ref, home=tmp_path / "home", hf=tmp_path / "hf",
                     HF_HUB_OFFLINE="1")
    assert done.returncode == 1 and "is not a Hugging Face repository" in done.stderr
