"""`starchart models list | info | rm | add` on the embedded model, the Gemma GGUF,
a tiny local checkpoint and models pulled from the loopback hub; the names work
for `serve --model` and `chat --model`; names, paths and links that would leave
their place are refused; broken files are named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_support import starchart, tiny_gguf
from hub_server import COMMIT, HubServer

from starchart.engines import create_engine
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.errors import NotFound, Unavailable
from starchart.registry import EMBEDDED_NAME
from starchart.settings import Settings

REPO = "tiny-org/tiny-gguf"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"home": tmp_path / "home", "hf": tmp_path / "hf"}


def listing(dirs: dict[str, Path], **env: str) -> dict[str, dict]:
    done = starchart("models", "list", "--json", **dirs, **env)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_list_and_info_of_the_embedded_model_gemma_and_a_checkpoint(dirs, gemma_gguf,
                                                                     tiny_checkpoint):
    assert starchart("models", "add", "gemma", str(gemma_gguf), **dirs).returncode == 0
    added = starchart("models", "add", "tiny", str(tiny_checkpoint), **dirs)
    assert added.returncode == 0, added.stderr
    rows = listing(dirs)
    assert list(rows) == [EMBEDDED_NAME, "gemma", "tiny"]
    assert rows[EMBEDDED_NAME] | {"engine": "llamacpp", "format": "gguf", "quantization": "Q4_1",
                                  "parameters": 134515008} == rows[EMBEDDED_NAME]
    assert rows["gemma"] | {"engine": "llamacpp", "quantization": "Q4_K_M",
                            "parameters": 268098176, "size": gemma_gguf.stat().st_size,
                            "origin": "path"} == rows["gemma"]
    tiny = rows["tiny"]
    assert (tiny["engine"], tiny["format"], tiny["quantization"]) == \
        ("transformers", "safetensors", "F32")
    assert tiny["size"] == sum(p.stat().st_size for p in tiny_checkpoint.iterdir())
    table = starchart("models", "list", **dirs).stdout
    assert table.splitlines()[0].split() == ["NAME", "ENGINE", "FORMAT", "QUANT", "PARAMS",
                                             "SIZE", "SOURCE"]
    assert "gemma" in table and "268M" in table

    gemma = starchart("models", "info", "gemma", **dirs)
    assert gemma.returncode == 0, gemma.stderr
    assert "architecture:   gemma3" in gemma.stdout and "32768 tokens" in gemma.stdout
    assert "no chat template (a base model)" in gemma.stdout
    assert "gguf Q4_K_M" in gemma.stdout and "starchart serve --model gemma" in gemma.stdout
    smol = json.loads(starchart("models", "info", EMBEDDED_NAME, "--json", **dirs).stdout)
    assert smol["chat_template"]["present"] and not smol["chat_template"]["tools"]
    assert "<|im_start|>" in smol["chat_template"]["first_lines"][0]
    assert smol["context_length"] == 8192 and smol["plan"]["best"] == "gguf Q4_1"
    planned = starchart("plan", "gemma", "--json", **dirs)  # `plan` takes the names too
    assert json.loads(planned.stdout)["plan"]["model"]["architecture"] == "gemma3"
    tiny_info = json.loads(starchart("models", "info", "tiny", "--json", **dirs).stdout)
    assert tiny_info["architecture"] == "llama" and tiny_info["layers"] == 2
    assert tiny_info["plan"]["model"]["source"] == "safetensors"


def test_serve_and_chat_take_the_names(dirs, gemma_gguf, tiny_checkpoint):
    starchart("models", "add", "gemma", str(gemma_gguf), **dirs)
    starchart("models", "add", "tiny", str(tiny_checkpoint), **dirs)
    engine = create_engine(Settings(model="gemma", home=dirs["home"]))
    assert isinstance(engine, LlamaCppEngine) and engine.info.id == "gemma"
    assert engine.path == gemma_gguf
    with pytest.raises(Exception, match="--engine transformers"):
        create_engine(Settings(model="tiny", home=dirs["home"]))
    # The name is looked up in the settings' home (not the environment's STARCHART_HOME).
    tiny = create_engine(Settings(model="tiny", home=dirs["home"], engine="transformers"))
    assert tiny.info.id == "tiny"
    tiny.load()
    try:
        assert tiny.loaded
    finally:
        tiny.close()
    said = starchart("chat", "--model", "gemma", "-p", "The capital of Germany is",
                     "--temperature", "0", "--max-tokens", "8", "--n-ctx", "256",
                     "--parallel", "1", **dirs)
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip()


def test_rm_frees_only_that_models_files(dirs):
    repos = {REPO: {"tiny-Q4_K_M.gguf": tiny_gguf("a"), "tiny-Q8_0.gguf": tiny_gguf("b", quant=7)}}
    repo_dir = dirs["hf"] / "hub" / "models--tiny-org--tiny-gguf"
    snap = repo_dir / "snapshots" / COMMIT
    with HubServer(repos) as hub:
        for quant in ("Q4_K_M", "Q8_0"):
            pulled = starchart("models", "pull", f"{REPO}:{quant}", **dirs, HF_ENDPOINT=hub.url)
            assert pulled.returncode == 0, pulled.stderr
    assert len(list((repo_dir / "blobs").iterdir())) == 2
    asked = starchart("models", "rm", f"{REPO}:Q8_0", **dirs, stdin="n\n")
    assert asked.returncode == 1 and "nothing removed" in asked.stdout
    assert "Delete tiny-org/tiny-gguf:Q8_0: 1 file(s)" in asked.stdout
    assert (snap / "tiny-Q8_0.gguf").exists()

    gone = starchart("models", "rm", f"{REPO}:Q8_0", "-y", **dirs)
    assert gone.returncode == 0, gone.stderr
    assert sorted(p.name for p in snap.iterdir()) == ["tiny-Q4_K_M.gguf"]
    assert len(list((repo_dir / "blobs").iterdir())) == 1
    rows = listing(dirs, HF_HUB_OFFLINE="1")
    assert f"{REPO}:Q8_0" not in rows and rows[f"{REPO}:Q4_K_M"]["downloaded"]
    # The last file of the repository: its cache folder goes whole.
    assert starchart("models", "rm", f"{REPO}:Q4_K_M", "-y", **dirs).returncode == 0
    assert not repo_dir.exists()


def test_rm_of_a_path_name_keeps_the_files_and_the_embedded_model_stays(dirs, tmp_path):
    own = tmp_path / "mine.gguf"
    own.write_bytes(tiny_gguf("mine"))
    starchart("models", "add", "mine", str(own), **dirs)
    done = starchart("models", "rm", "mine", "-y", **dirs)
    assert done.returncode == 0 and own.exists()
    assert "mine" not in listing(dirs)
    embedded = starchart("models", "rm", EMBEDDED_NAME, "-y", **dirs)
    assert embedded.returncode == 1 and "embedded model" in embedded.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["add", "../up", "x.gguf"], "contains '..'"),
    (["add", "/etc/model", "x.gguf"], "is a path, not a model name"),
    (["add", "a/b/c", "x.gguf"], "is not a model name"),
    (["add", EMBEDDED_NAME, "x.gguf"], "embedded model's name"),
    (["rm", "/etc/passwd", "-y"], "is a path, not a model name"),
    (["rm", "nobody", "-y"], "no model named 'nobody'"),
    (["add", "x", "/no/such/file.gguf"], "neither a file or folder here nor"),
])
def test_names_and_paths_are_refused_where_they_do_not_belong(dirs, args, says):
    done = starchart("models", *args, **dirs)
    assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr


def use_cache(monkeypatch: pytest.MonkeyPatch, dirs: dict[str, Path]) -> None:
    """This process's huggingface_hub on the test's HF cache (read at its import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(dirs["hf"] / "hub"))


def test_a_link_out_of_the_cache_is_refused(dirs, tmp_path, monkeypatch):
    repos = {REPO: {"tiny-Q4_K_M.gguf": tiny_gguf("a")}}
    with HubServer(repos) as hub:
        starchart("models", "pull", f"{REPO}:Q4_K_M", **dirs, HF_ENDPOINT=hub.url)
    outside = tmp_path / "outside.gguf"
    outside.write_bytes(tiny_gguf("elsewhere"))
    link = dirs["hf"] / "hub" / "models--tiny-org--tiny-gguf" / "snapshots" / COMMIT / \
        "tiny-Q4_K_M.gguf"
    link.unlink()
    os.symlink(outside, link)
    for args in (["info", f"{REPO}:Q4_K_M"], ["rm", f"{REPO}:Q4_K_M", "-y"]):
        done = starchart("models", *args, **dirs)
        assert done.returncode == 1 and "points outside the Hugging Face cache" in done.stderr
    assert outside.exists()
    use_cache(monkeypatch, dirs)
    with pytest.raises(Exception, match="points outside the Hugging Face cache"):
        create_engine(Settings(model=f"{REPO}:Q4_K_M", home=dirs["home"]))


def test_a_hub_name_not_downloaded_says_how_to_get_it(dirs, monkeypatch):
    added = starchart("models", "add", "later", "org/model:Q4_K_M", **dirs)
    assert added.returncode == 0 and "models pull org/model:Q4_K_M" in added.stdout
    assert listing(dirs)["later"]["downloaded"] is False
    use_cache(monkeypatch, dirs)
    with pytest.raises(NotFound, match="starchart models pull org/model:Q4_K_M"):
        create_engine(Settings(model="later", home=dirs["home"]))


def test_broken_weights_are_named(dirs, tmp_path, tiny_checkpoint):
    whole = tiny_gguf("cut", rows=4096)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: len(whole) // 2])
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for item in tiny_checkpoint.iterdir():
        (checkpoint / item.name).write_bytes(item.read_bytes())
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()

    def refused(target: Path, message: str) -> None:
        done = starchart("models", "add", "broken", str(target), **dirs)
        assert done.returncode == 1 and message in done.stderr, done.stderr

    refused(cut, "cut.gguf is truncated")
    refused(empty, "empty.gguf is empty")
    weights.write_bytes(data[:-1000])
    refused(checkpoint, "model.safetensors is truncated: ")
    weights.write_bytes(data[:100])
    refused(checkpoint, "model.safetensors is not a readable safetensors file")
    assert "broken" not in listing(dirs)
    # Served by path, the engine names the file instead of handing it to llama.cpp.
    with pytest.raises(Unavailable, match=r"cut\.gguf is truncated"):
        LlamaCppEngine("cut", cut, n_ctx=128, parallel=1).load()


def test_list_with_url_says_what_a_running_server_has_loaded(dirs, live_server, gemma_gguf):
    starchart("models", "add", "gemma", str(gemma_gguf), **dirs)
    rows = listing(dirs)  # without --url: no server column
    assert rows[EMBEDDED_NAME]["loaded"] is None
    done = starchart("models", "list", "--json", "--url", live_server.url, **dirs)
    assert done.returncode == 0, done.stderr
    served = {row["name"]: row["loaded"] for row in json.loads(done.stdout)}
    assert served == {EMBEDDED_NAME: "loaded", "gemma": "not served"}
    table = starchart("models", "list", "--url", live_server.url, **dirs).stdout
    assert table.splitlines()[0].split()[-1] == "SERVER"
    down = starchart("models", "list", "--url", "http://127.0.0.1:9", **dirs)
    assert down.returncode == 1 and "cannot list the models of the server" in down.stderr
