"""The GGUF reader names a file's type without importing the gguf package; its
table of names must say what the gguf package says."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from starchart.doctor import gguf as reader
from starchart.doctor.gguf import file_type_name


def test_every_file_type_gguf_knows_has_gguf_s_name() -> None:
    for member in gguf.LlamaFileType:
        assert file_type_name(member.value) == member.name.split("_", 1)[-1], member


def test_the_table_names_no_type_gguf_does_not_know() -> None:
    known = {member.value for member in gguf.LlamaFileType}
    assert set(reader._FILE_TYPES) <= known


def test_a_number_not_in_the_table_is_asked_of_gguf(monkeypatch: pytest.MonkeyPatch) -> None:
    # A type a newer llama.cpp added: the installed gguf package may know it.
    monkeypatch.delitem(reader._FILE_TYPES, gguf.LlamaFileType.MOSTLY_Q4_K_M.value)
    assert file_type_name(gguf.LlamaFileType.MOSTLY_Q4_K_M.value) == "Q4_K_M"
    assert file_type_name(4) == "type 4"  # removed from llama.cpp: neither knows it


def test_guessed_has_a_name() -> None:
    # LLAMA_FTYPE_GUESSED has no ALL_/MOSTLY_ prefix: naming it crashed `models list`.
    assert file_type_name(gguf.LlamaFileType.GUESSED.value) == "GUESSED"


@pytest.mark.parametrize("value", ["Q4_K_M", [15, 15], 15.0, True])
def test_a_file_type_that_is_not_a_whole_number_is_unknown(tmp_path: Path,
                                                           value: object) -> None:
    # A malformed header crashed `models list` (int() of a list) instead of leaving the
    # quantization blank, as a file that states none does.
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    if isinstance(value, str):
        writer.add_string("general.file_type", value)
    elif isinstance(value, list):
        writer.add_array("general.file_type", value)
    elif isinstance(value, bool):
        writer.add_bool("general.file_type", value)
    else:
        assert isinstance(value, float)
        writer.add_float32("general.file_type", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert reader.read(path).file_type is None
