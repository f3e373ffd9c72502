"""``starchart clip IMAGE... --labels ...`` in-process, through the real entry point."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from starchart.cli import main
from starchart.vision.clip import ClipModel

from tests.vision.helpers import make_image


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "wide.png", tmp_path / "tall.jpg"]
    make_image(320, 200, 1).save(paths[0])
    make_image(150, 260, 2).save(paths[1])
    return paths


def test_json_output_matches_the_model(photos: list[Path], tiny_clip_dir: Path,
                                       clip_model: ClipModel,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["clip", *map(str, photos), "--labels", "cat, dog,car", "--json",
                 "--clip", str(tiny_clip_dir)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == tiny_clip_dir.name
    assert [entry["image"] for entry in out["images"]] == [str(p) for p in photos]
    from PIL import Image

    for entry, path in zip(out["images"], photos, strict=True):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        expected = asyncio.run(clip_model.classify(image, ["cat", "dog", "car"]))
        assert [x["label"] for x in entry["labels"]] == [x.label for x in expected]
        for got, want in zip(entry["labels"], expected, strict=True):
            assert got["probability"] == pytest.approx(want.probability, abs=1e-5)


def test_table_output(photos: list[Path], tiny_clip_dir: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["clip", str(photos[0]), "--labels", "cat,dog,car", "--top", "2",
                 "--template", "a photo of a {}", "--template", "a sketch of a {}",
                 "--clip", str(tiny_clip_dir)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "label", "probability", "similarity"]
    assert len(lines) == 3 and lines[1].startswith(str(photos[0]))
    assert all(line.split()[-2].endswith("%") for line in lines[1:])


def test_bad_inputs_exit_1_with_a_message(tmp_path: Path, photos: list[Path],
                                          tiny_clip_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert main(["clip", str(junk), "--labels", "cat", "--clip", str(tiny_clip_dir)]) == 1
    assert "junk.png: the data is not an image" in capsys.readouterr().err
    assert main(["clip", str(photos[0]), "--labels", ",", "--clip", str(tiny_clip_dir)]) == 1
    assert "labels[0] is empty" in capsys.readouterr().err
    assert main(["clip", str(tmp_path / "nope.png"), "--labels", "cat",
                 "--clip", str(tiny_clip_dir)]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_the_default_model_says_how_to_fetch_it(photos: list[Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clip", str(photos[0]), "--labels", "cat"]) == 1
    assert "hf download openai/clip-vit-base-patch32" in capsys.readouterr().err
