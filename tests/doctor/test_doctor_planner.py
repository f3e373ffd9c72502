"""The memory planner: the embedded GGUF, tiny checkpoints, and published figures."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from starchart.doctor import nvidia, planner
from starchart.doctor.nvidia import GpuProbe
from starchart.errors import BadRequest, NotFound
from starchart.registry import EMBEDDED_NAME, embedded_gguf

DATA = Path(__file__).parent.parent / "data"
GB = planner.GB


def within(value: float, expected: float, tolerance: float = 0.10) -> bool:
    return abs(value - expected) <= tolerance * expected


def config(name: str) -> dict:
    return json.loads((DATA / "configs" / f"{name}.json").read_text())


def smi(stem: str) -> GpuProbe:
    found = nvidia.parse_smi_csv((DATA / "nvidia_smi" / f"{stem}.csv").read_text())
    table = nvidia.parse_smi_table((DATA / "nvidia_smi" / f"{stem}.txt").read_text())
    found.cuda_version = table.cuda_version
    return found


# --- the embedded GGUF -------------------------------------------------------------

def test_embedded_gguf_shape_from_its_metadata():
    shape = planner.load_shape(EMBEDDED_NAME)
    assert shape.source == "gguf" and shape.architecture == "llama"
    assert within(shape.n_params, 135e6, 0.01)
    assert (shape.n_layers, shape.hidden, shape.n_heads, shape.n_kv_heads, shape.head_dim,
            shape.vocab, shape.max_ctx) == (30, 576, 9, 3, 64, 49152, 8192)
    assert shape.gguf_quant == "Q4_1"
    size = embedded_gguf().stat().st_size
    assert shape.gguf_weight_bytes is not None and 0.9 * size < shape.gguf_weight_bytes < size


def test_embedded_gguf_plan_on_cpu():
    shape = planner.load_shape(EMBEDDED_NAME)
    plan = planner.plan(shape, n_ctx=8192, batch=1, gpus=GpuProbe(), ram_available=8 * GB)
    # K and V, 30 layers x 3 KV heads x 64 dims, 8192 positions, fp16.
    gguf_row = plan.options[-1]
    assert gguf_row.kv_cache == 2 * 30 * 3 * 64 * 8192 * 2
    assert plan.best is gguf_row and gguf_row.name == "gguf Q4_1"
    assert plan.best.command == f"starchart serve --model {EMBEDDED_NAME} --n-ctx 8192"
    assert [o.runnable for o in plan.options] == [False] * 4 + [True]
    assert plan.check().status == "ok"


def test_kv_cache_scales_with_context_and_batch():
    shape = planner.load_shape(EMBEDDED_NAME)
    one = planner.kv_cache_bytes(shape, 1024, 1)
    assert planner.kv_cache_bytes(shape, 4096, 1) == 4 * one
    assert planner.kv_cache_bytes(shape, 1024, 8) == 8 * one


def test_nothing_fits_in_too_little_memory():
    shape = planner.load_shape(EMBEDDED_NAME)
    plan = planner.plan(shape, n_ctx=4096, batch=1, gpus=GpuProbe(), ram_available=50_000_000)
    assert plan.best is None
    check = plan.check()
    assert check.status == "fail" and "gguf Q4_1" in check.detail


def test_a_corrupt_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\x01")
    with pytest.raises(BadRequest, match="not a readable GGUF"):
        planner.load_shape(str(bad))
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(BadRequest, match="no GGUF magic"):
        planner.load_shape(str(tmp_path / "not.gguf"))


def test_unknown_models_and_folders_without_config(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    # Offline, a hub id that is not cached: the exact command to fetch its one file.
    with pytest.raises(NotFound, match=r"`hf download bigcode/no-such-model-here config\.json`"):
        planner.load_shape("bigcode/no-such-model-here")
    with pytest.raises(NotFound, match="no local model"):
        planner.load_shape("./no/such/folder")
    with pytest.raises(BadRequest, match=r"no config\.json"):
        planner.load_shape(str(tmp_path))


# --- tiny checkpoints: config only, and config + safetensors headers ----------------

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3,
              "vocab_size": 1000, "max_position_embeddings": 512, "hidden_act": "silu",
              "tie_word_embeddings": False}
TINY_MIXTRAL = {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 96,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                "vocab_size": 300, "num_local_experts": 4, "num_experts_per_tok": 2,
                "hidden_act": "silu", "tie_word_embeddings": False}
TINY_BIGCODE = {"model_type": "gpt_bigcode", "n_embd": 64, "n_inner": 256, "n_head": 4,
                "n_layer": 2, "n_positions": 256, "vocab_size": 500, "multi_query": True}


def llama_tensors(c: dict) -> dict[str, list[int]]:
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h],
           "lm_head.weight": [v, h]}
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out |= {p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                p + "mlp.down_proj.weight": [h, i], p + "input_layernorm.weight": [h],
                p + "post_attention_layernorm.weight": [h]}
    return out


def bigcode_tensors(c: dict) -> dict[str, list[int]]:
    h, i, v = c["n_embd"], c["n_inner"], c["vocab_size"]
    qkv = h + 2 * (h // c["n_head"])  # multi-query: one K and one V head
    out = {"transformer.wte.weight": [v, h], "transformer.wpe.weight": [c["n_positions"], h],
           "transformer.ln_f.weight": [h], "transformer.ln_f.bias": [h]}
    for n in range(c["n_layer"]):
        p = f"transformer.h.{n}."
        out |= {p + "ln_1.weight": [h], p + "ln_1.bias": [h], p + "ln_2.weight": [h],
                p + "ln_2.bias": [h], p + "attn.c_attn.weight": [qkv, h],
                p + "attn.c_attn.bias": [qkv], p + "attn.c_proj.weight": [h, h],
                p + "attn.c_proj.bias": [h], p + "mlp.c_fc.weight": [i, h],
                p + "mlp.c_fc.bias": [i], p + "mlp.c_proj.weight": [h, i],
                p + "mlp.c_proj.bias": [h]}
    return out


def write_checkpoint(folder: Path, cfg: dict, tensors: dict[str, list[int]], *,
                     shards: int = 1, dtype: str = "BF16") -> Path:
    """config.json plus header-only safetensors files (the offsets promise data that is
    not there: the planner never reads past the header)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 \
            else "model.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in part:
            n = 1
            for d in tensors[name]:
                n *= d
            header[name] = {"dtype": dtype, "shape": tensors[name],
                            "data_offsets": [offset, offset + 2 * n]}
            offset += 2 * n
            weight_map[name] = file
        blob = json.dumps(header).encode()
        (folder / file).write_bytes(struct.pack("<Q", len(blob)) + blob)
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def count(tensors: dict[str, list[int]]) -> int:
    total = 0
    for shape in tensors.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


@pytest.mark.parametrize("cfg,make", [(TINY_LLAMA, llama_tensors),
                                      (TINY_BIGCODE, bigcode_tensors)])
def test_config_estimate_equals_the_tensor_count(tmp_path, cfg, make):
    exact = count(make(cfg))
    only_config = tmp_path / "config-only"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps(cfg))
    estimated = planner.load_shape(str(only_config))
    assert estimated.source == "config" and estimated.n_params == exact
    counted = planner.load_shape(str(write_checkpoint(tmp_path / "full", cfg, make(cfg))))
    assert counted.source == "safetensors" and counted.n_params == exact
    assert counted.linear_params == estimated.linear_params


def test_config_estimate_equals_a_real_transformers_model():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    for cfg in (TINY_LLAMA, TINY_BIGCODE, TINY_MIXTRAL):
        config_class = transformers.AutoConfig.for_model(**cfg)
        model = transformers.AutoModelForCausalLM.from_config(config_class)
        shape = planner.shape_from_config(cfg, name="tiny", path="-")
        assert shape.n_params == model.num_parameters(), cfg["model_type"]


def test_sharded_checkpoint_is_read_through_its_index(tmp_path):
    tensors = llama_tensors(TINY_LLAMA)
    folder = write_checkpoint(tmp_path / "sharded", TINY_LLAMA, tensors, shards=3)
    assert planner.load_shape(str(folder)).n_params == count(tensors)
    assert planner.load_shape(str(folder / "config.json")).n_params == count(tensors)


def test_tiny_checkpoint_plan_on_a_gpu(tmp_path):
    folder = write_checkpoint(tmp_path / "tiny", TINY_LLAMA, llama_tensors(TINY_LLAMA))
    plan = planner.plan(planner.load_shape(str(folder)), n_ctx=512, batch=2,
                        gpus=smi("470.82.01-1xT4"), ram_available=None)
    assert plan.best is not None and plan.best.name == "fp16/bf16"
    # A T4 (compute capability 7.5) has no native bf16: the flags say float16.
    assert plan.best.command == (f"starchart serve --model {folder} --engine transformers"
                                 " --dtype float16 --n-ctx 512")


# --- published figures -------------------------------------------------------------

PUBLISHED = [
    # config, parameters, {precision: published weight size in GB}
    ("starchat-beta", 15.5e9, {"fp32": 62, "fp16/bf16": 31, "int8": 16}),
    ("llama-2-7b", 6.74e9, {"fp16/bf16": 13.5}),
    ("mistral-7b-v0.1", 7.24e9, {"fp16/bf16": 14.5}),
]


@pytest.mark.parametrize("name,params,sizes", PUBLISHED)
def test_published_figures_within_ten_percent(name, params, sizes):
    shape = planner.shape_from_config(config(name), name=name, path="-")
    assert within(shape.n_params, params)
    for precision, gigabytes in sizes.items():
        assert within(planner.weight_bytes(shape, precision), gigabytes * GB), precision


def test_exact_counts_from_safetensors_headers(tmp_path):
    llama = config("llama-2-7b")
    folder = write_checkpoint(tmp_path / "llama-2-7b", llama, {
        k: v for k, v in llama_tensors({**llama}).items()}, shards=2)
    assert planner.load_shape(str(folder)).n_params == 6_738_415_616
    mistral = config("mistral-7b-v0.1")
    folder = write_checkpoint(tmp_path / "mistral", mistral, llama_tensors(mistral), shards=2)
    assert planner.load_shape(str(folder)).n_params == 7_241_732_096


def test_starchat_in_8bit_matches_the_users_18_gb():
    shape = planner.shape_from_config(config("starchat-beta"), name="starchat", path="-")
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi("550.54.15-1xRTX3090"),
                        ram_available=None)
    int8 = next(o for o in plan.options if o.name == "int8")
    assert within(int8.total, 18 * GB)
    # 24 GB card: fp16 (~33 GB) does not fit, 8-bit does and is the best that fits.
    assert plan.best is int8
    assert plan.best.command == ("starchart serve --model starchat --engine transformers"
                                 " --quantize 8bit --n-ctx 2048")


@pytest.mark.parametrize("stem,best", [
    ("535.104.05-4xA100", "fp16/bf16"),   # 80 GB
    ("550.54.15-1xRTX3090", "int8"),      # 24 GB
    ("470.82.01-1xT4", "int4"),           # 16 GB
])
def test_starchat_best_option_per_gpu(stem, best):
    shape = planner.shape_from_config(config("starchat-beta"), name="starchat", path="-")
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi(stem), ram_available=None)
    assert plan.best is not None and plan.best.name == best


def test_starchat_on_a_cpu_box_needs_a_gguf():
    shape = planner.shape_from_config(config("starchat-beta"), name="starchat", path="-")
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=GpuProbe(), ram_available=24 * GB)
    assert plan.best is None
    assert [o.runnable for o in plan.options] == [True, True, False, False]
    assert plan.check().status == "fail"


def test_starchat_on_the_2xv100_box_is_split_across_both_gpus():
    shape = planner.shape_from_config(config("starchat-beta"), name="starchat", path="-")
    two = smi("470.199.02-2xV100")  # 32 GB free and ~15 GB free
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=two, ram_available=None)
    assert plan.budget.what == "2 GPUs together (Tesla V100-SXM2-32GB)"
    assert plan.budget.free == sum(g.memory_free for g in two.gpus)
    # ~34 GB of fp16, split over both, with float16 (no bf16 on Volta, and a 470 driver
    # cannot say the compute capability).
    assert plan.best is not None and plan.best.name == "fp16/bf16"
    assert plan.best.command == ("starchart serve --model starchat --engine transformers"
                                 " --dtype float16 --n-ctx 2048")
    check = plan.check()
    assert check.status == "ok"
    assert "split across 2 GPUs (transformers device_map='auto')" in check.detail
    big = planner.shape_from_config({**config("starchat-beta"), "n_layer": 200}, name="big",
                                    path="-")  # ~76B parameters: ~40 GB even in 4-bit
    plan = planner.plan(big, n_ctx=2048, batch=1, gpus=two, ram_available=None)
    assert plan.best is not None and plan.best.name == "int4"
    huge = planner.shape_from_config({**config("starchat-beta"), "n_layer": 400}, name="huge",
                                     path="-")
    plan = planner.plan(huge, n_ctx=2048, batch=1, gpus=two, ram_available=None)
    assert plan.best is None and plan.check().status == "fail"


def test_a_gguf_on_two_gpus_gets_the_tensor_split():
    shape = planner.load_shape(EMBEDDED_NAME)
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi("470.199.02-2xV100"),
                        ram_available=None)
    assert plan.best is not None
    assert plan.best.command == (f"starchart serve --model {EMBEDDED_NAME} --n-gpu-layers -1"
                                 " --tensor-split 34,16 --n-ctx 2048")
    assert "--tensor-split" in plan.check().detail
    # A llama.cpp build without GPU offload runs it on the CPU, planned against RAM.
    cpu = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi("470.199.02-2xV100"),
                       ram_available=8 * GB, ready=planner.Readiness(llama_gpu=False))
    assert cpu.budget.device == "cpu" and cpu.best is not None
    assert cpu.best.command == f"starchart serve --model {EMBEDDED_NAME} --n-ctx 2048"


def test_the_environment_is_checked_before_recommending():
    """The document's box as it is at first: torch cannot see the T4, no bitsandbytes."""
    shape = planner.shape_from_config(config("starchat-beta"), name="starchat", path="-")
    broken = planner.Readiness(torch_gpu=False, torch_fix="TORCH-LINE", bnb=False,
                               bnb_fix="BNB-LINE")
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi("470.82.01-1xT4"),
                        ram_available=None, ready=broken)
    assert plan.best is None
    assert all(not o.runnable for o in plan.options)
    check = plan.check()
    assert check.status == "fail" and check.fix == "TORCH-LINE"
    assert check.detail.startswith("int4 would fit") and "torch cannot use the GPU" in check.detail
    # torch fixed, bitsandbytes not: no quantized suggestion, the bitsandbytes line instead.
    plan = planner.plan(shape, n_ctx=2048, batch=1, gpus=smi("470.82.01-1xT4"),
                        ram_available=None, ready=planner.Readiness(torch_gpu=True, bnb=False,
                                                                    bnb_fix="BNB-LINE"))
    assert plan.best is None and plan.check().fix == "BNB-LINE"
    assert "--quantize" not in plan.check().detail
