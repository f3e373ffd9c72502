"""A tiny random CLIP with the real CLIP tokenizer, saved like a hub checkpoint.

The weights are random (no model hub here) but everything around them is
real: OpenAI's BPE vocabulary (shipped by ``open_clip_torch`` as
``bpe_simple_vocab_16e6.txt.gz``), turned into the ``vocab.json`` and
``merges.txt`` a ``CLIPTokenizer`` reads, the standard CLIP image
preprocessing config, ``save_pretrained`` into a folder, and our real loading
code (``--clip FOLDER``) reading it back.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from starchart.vision.clip import ClipModel

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


def build_tiny_clip(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 224, "patch_size": 32},
        projection_dim=16,
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


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def clip_model(tiny_clip_dir: Path) -> Iterator[ClipModel]:
    model = ClipModel(str(tiny_clip_dir), max_batch=8, max_wait_ms=20)
    model.load()
    yield model
    model.close()
