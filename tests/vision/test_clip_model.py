"""ClipModel against a reference computed independently, here, from transformers.

The reference runs the processor and the model's full ``forward`` and does
the maths by hand (normalise, cosine, scale, softmax); ours goes through our
loading code, our preprocessing and tokenizing, the batchers and our maths.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from starchart.errors import BadRequest, NotFound, StarchartError
from starchart.vision.clip import ClipModel

from tests.vision.helpers import make_image

ATOL = 1e-5
LABELS = ["cat", "dog", "a red sports car", "an astronaut riding a horse"]
TEMPLATES = ["a photo of a {}", "a blurry photo of the {}", "itap of a {}"]


@pytest.fixture(scope="module")
def reference(tiny_clip_dir: Path) -> Any:
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(tiny_clip_dir),
                              tokenizer=CLIPTokenizer.from_pretrained(tiny_clip_dir))
    return model, processor


def ref_embeddings(reference: Any, images: list[Image.Image], texts: list[str]
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
    model, processor = reference
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
        image, text = out.image_embeds, out.text_embeds
        scale = float(model.logit_scale.exp())
        # The model's own logits, to be sure the manual maths below is CLIP's.
        logits = out.logits_per_image
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(scale * image @ text.T, logits, atol=ATOL, rtol=0)
    return image, text, scale


def softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max())
    return e / e.sum()


IMAGES = [make_image(320, 200, 1), make_image(180, 300, 2), make_image(224, 224, 3)]


def test_loaded_model_describes_itself(clip_model: ClipModel, tiny_clip_dir: Path) -> None:
    info = clip_model.info.as_dict()
    assert clip_model.info.id == tiny_clip_dir.name
    assert info["n_ctx"] == 77 and info["embedding_dim"] == 16 and info["dtype"] == "float32"
    assert info["weight_bytes"] > 0
    assert clip_model.logit_scale == pytest.approx(10.0, rel=1e-5)
    assert Image.MAX_IMAGE_PIXELS == clip_model.max_image_pixels


def test_preprocessing_is_clips_on_non_square_images(clip_model: ClipModel,
                                                     reference: Any) -> None:
    _, processor = reference
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    for image in [make_image(320, 200, 4), make_image(151, 403, 5), make_image(500, 225, 6)]:
        ours = clip_model.preprocess([image])[0]
        theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        # By hand: shortest side to 224 (bicubic), centre crop 224, scale, CLIP mean/std.
        w, h = image.size
        short = min(w, h)
        # The long side is truncated, not rounded, as torchvision's Resize(224) did for CLIP.
        size = (224, int(h * 224 / short)) if w == short else (int(w * 224 / short), 224)
        resized = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
        cropped = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float64)
        manual = ((cropped / 255 - mean) / std).transpose(2, 0, 1)
        assert ours.shape == (3, 224, 224)
        np.testing.assert_allclose(ours.numpy(), manual, atol=1e-4)


def test_tokenizer_is_clips_real_bpe(clip_model: ClipModel) -> None:
    # OpenAI's tokenizer gives these ids for the user's document's prompt.
    assert clip_model.tokenize(["a photo of a cat"], ["t"]) == [
        [49406, 320, 1125, 539, 320, 2368, 49407]]


def test_embeddings_equal_the_reference(clip_model: ClipModel, reference: Any) -> None:
    texts = ["a photo of a cat", "a photo of a dog", "a diagram"]
    ref_image, ref_text, _ = ref_embeddings(reference, IMAGES, texts)

    async def ours() -> tuple[torch.Tensor, torch.Tensor]:
        return await asyncio.gather(clip_model.embed_images(IMAGES), clip_model.embed_texts(texts))

    image, text = asyncio.run(ours())
    torch.testing.assert_close(image, ref_image, atol=ATOL, rtol=0)
    torch.testing.assert_close(text, ref_text, atol=ATOL, rtol=0)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3), atol=ATOL, rtol=0)


def test_similarity_matrix_equals_the_reference(clip_model: ClipModel, reference: Any) -> None:
    texts = ["a photo of a cat", "a plane", "the number 7", "x"]
    ref_image, ref_text, scale = ref_embeddings(reference, IMAGES, texts)
    matrix = asyncio.run(clip_model.similarity(IMAGES, texts))
    assert matrix.shape == (3, 4)
    torch.testing.assert_close(matrix, scale * ref_image @ ref_text.T, atol=ATOL, rtol=0)


def test_zero_shot_equals_the_reference(clip_model: ClipModel, reference: Any) -> None:
    image = IMAGES[0]
    prompts = [f"a photo of a {label}" for label in LABELS]
    ref_image, ref_text, scale = ref_embeddings(reference, [image], prompts)
    ref_sims = (scale * ref_image @ ref_text.T)[0]
    ref_probs = softmax(ref_sims)
    ranked = asyncio.run(clip_model.classify(image, LABELS))
    assert [r.probability for r in ranked] == sorted((r.probability for r in ranked),
                                                     reverse=True)
    got = {r.label: r for r in ranked}
    for i, label in enumerate(LABELS):
        assert got[label].similarity == pytest.approx(float(ref_sims[i]), abs=ATOL)
        assert got[label].probability == pytest.approx(float(ref_probs[i]), abs=ATOL)
    assert sum(r.probability for r in ranked) == pytest.approx(1.0, abs=ATOL)
    # Not all alike, or the comparison above would prove little.
    assert max(ref_probs) - min(ref_probs) > 0.05


def test_templates_are_averaged_per_label(clip_model: ClipModel, reference: Any) -> None:
    image = IMAGES[1]
    prompts = [t.replace("{}", label) for label in LABELS for t in TEMPLATES]
    ref_image, ref_text, scale = ref_embeddings(reference, [image], prompts)
    per_label = ref_text.reshape(len(LABELS), len(TEMPLATES), -1).mean(dim=1)
    per_label = per_label / per_label.norm(dim=-1, keepdim=True)
    ref_sims = (scale * ref_image @ per_label.T)[0]
    ref_probs = softmax(ref_sims)
    got = {r.label: r for r in asyncio.run(clip_model.classify(image, LABELS, TEMPLATES))}
    for i, label in enumerate(LABELS):
        assert got[label].similarity == pytest.approx(float(ref_sims[i]), abs=ATOL)
        assert got[label].probability == pytest.approx(float(ref_probs[i]), abs=ATOL)


def test_batched_equals_unbatched(tiny_clip_dir: Path) -> None:
    # A fresh model: its first pass waits (up to max_wait) for every announced item.
    batched = ClipModel(str(tiny_clip_dir), max_batch=16, max_wait_ms=60_000)
    alone = ClipModel(str(tiny_clip_dir), max_batch=1, max_wait_ms=0)
    images = [make_image(200 + 17 * i, 260 - 11 * i, 10 + i) for i in range(8)]
    texts = ["a cat", "the quick brown fox jumps over the lazy dog", "7", "a photo of a car"]

    async def concurrently(model: ClipModel) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        image_rows = asyncio.gather(*(model.embed_images([im]) for im in images))
        text_rows = asyncio.gather(*(model.embed_texts([t]) for t in texts))
        return await asyncio.gather(image_rows, text_rows)

    try:
        batched.load()
        alone.load()
        together = asyncio.run(concurrently(batched))
        single = asyncio.run(concurrently(alone))
        # Eight requests, one forward pass (and one for the four texts).
        assert batched.images.stats.sizes == [8]  # type: ignore[union-attr]
        assert batched.texts.stats.sizes == [4]  # type: ignore[union-attr]
        assert alone.images.stats.largest == 1  # type: ignore[union-attr]
    finally:
        batched.close()
        alone.close()
    for b, s in zip(together[0] + together[1], single[0] + single[1], strict=True):
        torch.testing.assert_close(b, s, atol=ATOL, rtol=0)


def test_a_prompt_longer_than_the_context_is_refused(clip_model: ClipModel) -> None:
    long_label = " ".join(["word"] * 80)
    with pytest.raises(BadRequest) as info:
        asyncio.run(clip_model.classify(IMAGES[0], ["cat", long_label]))
    assert info.value.param == "labels[1]" and info.value.code == "context_length_exceeded"
    assert "77" in info.value.message and "never truncated" in info.value.message
    # 75 words + start + end = 77 tokens: exactly the context, accepted.
    ok = asyncio.run(clip_model.embed_texts([" ".join(["word"] * 75)]))
    assert ok.shape == (1, 16)


def test_missing_hub_model_says_how_to_fetch_it() -> None:
    model = ClipModel("openai/clip-vit-base-patch32")
    with pytest.raises(NotFound) as info:
        model.load()
    message = info.value.message
    assert "openai/clip-vit-base-patch32" in message
    assert "hf download openai/clip-vit-base-patch32" in message
    assert not model.loaded
    with pytest.raises(StarchartError) as later:
        model.require()
    assert later.value.status == 503 and "hf download" in later.value.message


def test_a_folder_that_is_not_clip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(StarchartError) as info:
        ClipModel(str(tmp_path)).load()
    assert "not a CLIP model" in info.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound):
        ClipModel(str(empty)).load()
    with pytest.raises(NotFound, match="no folder at that path"):
        ClipModel("/no/such/folder/").load()


def test_an_unusable_device_is_a_clear_error(tiny_clip_dir: Path) -> None:
    with pytest.raises(BadRequest) as info:
        ClipModel(str(tiny_clip_dir), device="nonsense:7").load()
    assert info.value.param == "clip_device" and "nonsense:7" in info.value.message


def test_label_embeddings_are_cached_without_changing_results(clip_model: ClipModel) -> None:
    labels = ["zebra", "giraffe", "okapi"]
    first = asyncio.run(clip_model.classify(IMAGES[2], labels))
    texts = clip_model.texts
    assert texts is not None
    items_before = texts.stats.items
    again = asyncio.run(clip_model.classify(IMAGES[2], [*labels, "tapir"]))
    assert texts.stats.items == items_before + 1  # only the new label was computed
    # Probabilities change with the label set; similarities do not.
    sims = {r.label: r.similarity for r in again}
    for r in first:
        assert sims[r.label] == pytest.approx(r.similarity, abs=ATOL)


def test_the_text_cache_is_bounded() -> None:
    from starchart.vision.clip import LRUCache

    cache = LRUCache(2)
    cache.put((1,), "a")
    cache.put((2,), "b")
    assert cache.get((1,)) == "a"  # (1,) is now the most recent
    cache.put((3,), "c")
    assert len(cache) == 2 and cache.get((2,)) is None and cache.get((1,)) == "a"
