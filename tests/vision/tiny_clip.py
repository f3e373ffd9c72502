"""Build a random CLIP checkpoint with the real CLIP tokenizer, saved like a hub one.

The weights are random (no model hub here) but everything around them is
real: OpenAI's BPE vocabulary (shipped by ``open_clip_torch`` as
``bpe_simple_vocab_16e6.txt.gz``), turned into the ``vocab.json`` and
``merges.txt`` a ``CLIPTokenizer`` reads, the standard CLIP image
preprocessing config, and ``save_pretrained`` into a folder that our real
loading code (``--clip FOLDER``) reads back. Used by the tests (``tiny``) and
by ``benchmarks/bench_clip_batching.py`` (``tiny`` or ``b32``, ViT-B/32's shape).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np

# OpenAI's tokenizer keeps the first 48,894 merges of the file (49152 - 256 - 2):
# with 512 byte tokens and 2 special tokens that makes its 49,408-token vocabulary.
N_MERGES = 49152 - 256 - 2


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, (
        "open_clip_torch provides the CLIP BPE vocabulary: `pip install --no-deps"
        " open_clip_torch` (make install-test does this)"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible map of the 256 bytes to printable characters, in id order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = [256 + i for i, b in enumerate(b for b in range(256) if b not in printable)]
    codes = printable + shifted
    return [chr(c) for c in codes]


def write_clip_tokenizer_files(folder: Path) -> None:
    lines = gzip.decompress(_bpe_file().read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is the file's version header
    symbols = _byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m.split()) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


SHAPES = {
    # Seconds to build; enough to exercise every code path.
    "tiny": ({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2},
             {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2}, 16),
    # openai/clip-vit-base-patch32's architecture: its compute, with random weights.
    "b32": ({"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 8},
            {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12}, 512),
}


def build_clip(folder: Path, shape: str = "tiny") -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    text, vision, projection = SHAPES[shape]
    config = CLIPConfig(
        text_config={**text, "vocab_size": 49408, "max_position_embeddings": 77,
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={**vision, "image_size": 224, "patch_size": 32},
        projection_dim=projection,
        # OpenAI's checkpoints learned 100 (x cosine); random weights give cosines so far
        # apart that 100 would make every probability 0 or 1, and tests could not tell a
        # wrong softmax from a right one.
        logit_scale_init_value=float(np.log(10.0)),
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    # The defaults are OpenAI's: shortest side 224 bicubic, center crop 224, CLIP mean/std.
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer
                  ).save_pretrained(folder)
    return folder
