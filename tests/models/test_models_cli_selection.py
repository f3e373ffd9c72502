"""Which files of a repository `models pull` takes (the rules, on listings)."""

from __future__ import annotations

import pytest

from starchart.errors import BadRequest
from starchart.models.names import check_name, parse_ref
from starchart.models.selection import select

SPLIT = {f"m-Q8_0-0000{i}-of-00003.gguf": 10 for i in (1, 2, 3)}


def test_a_split_gguf_set_is_one_model_and_an_incomplete_one_is_not() -> None:
    files = {**SPLIT, "m-Q4_K_M.gguf": 5}
    chosen = select("o/r", files, "Q8_0")
    assert chosen.files == tuple(sorted(SPLIT)) and chosen.gguf == "m-Q8_0-00001-of-00003.gguf"
    del files["m-Q8_0-00002-of-00003.gguf"]
    with pytest.raises(BadRequest, match="several GGUF files"):
        select("o/r", files, "Q8_0")


def test_a_file_name_selects_that_file_and_a_pickle_file_needs_permission() -> None:
    files = {"a-Q4_K_M.gguf": 1, "b-Q4_K_M.gguf": 1, "weights.pt": 1}
    assert select("o/r", files, "b-Q4_K_M.gguf").files == ("b-Q4_K_M.gguf",)
    with pytest.raises(BadRequest, match="several GGUF files"):
        select("o/r", files, "Q4_K_M")
    with pytest.raises(BadRequest, match="allow-pickle"):
        select("o/r", files, "weights.pt")


def test_a_checkpoint_prefers_safetensors_and_skips_code_and_subfolders() -> None:
    files = {"config.json": 1, "model-00001-of-00002.safetensors": 1,
             "model-00002-of-00002.safetensors": 1, "model.safetensors.index.json": 1,
             "pytorch_model.bin": 1, "tokenizer.json": 1, "modeling.py": 1,
             "original/consolidated.pth": 1, "chat_template.jinja": 1, "model.gguf": 1}
    chosen = select("o/r", files, allow_pickle=True)
    assert chosen.format == "safetensors"
    assert set(chosen.files) == {"config.json", "model-00001-of-00002.safetensors",
                                 "model-00002-of-00002.safetensors", "tokenizer.json",
                                 "model.safetensors.index.json", "chat_template.jinja"}


@pytest.mark.parametrize("name", ["..", "a/../b", "/abs", "~/x", "C:\\m", "a/b/c", "", " x"])
def test_these_are_not_names(name: str) -> None:
    with pytest.raises(BadRequest):
        check_name(name)


def test_a_reference_splits_at_the_first_colon() -> None:
    ref = parse_ref("org/repo:Q4_K_M")
    assert (ref.repo, ref.selector, str(ref)) == ("org/repo", "Q4_K_M", "org/repo:Q4_K_M")
    assert parse_ref("org/repo").selector is None
