"""CLIP: image and text embeddings, similarity and zero-shot classification.

On transformers' ``CLIPModel`` and ``CLIPProcessor``. The maths, as in the
CLIP paper and the user's document:

- embeddings are L2-normalised projections of the pooled image / text states;
- similarity = ``logit_scale.exp()`` x cosine (100 x cosine for OpenAI's
  checkpoints);
- zero-shot: each label becomes one prompt per template (``"a photo of a
  {}"`` by default); the label's text embedding is the re-normalised mean of
  its prompts' embeddings; probabilities are the softmax over labels of the
  image's similarity to each.

Images and texts each go through a ``DynamicBatcher``: concurrent requests
share one forward pass. Batching never changes a result: every output row
depends only on its own input (the text model pools at each prompt's own
end-of-text token, which the causal mask keeps blind to the padding after it).

A prompt longer than the text model's context (77 tokens) is refused with a
400, never silently truncated: a cut label would be classified as something
else than what the client asked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starchart.errors import BadRequest, NotFound, StarchartError, Unavailable
from starchart.registry import is_hub_id, model_id
from starchart.vision.batching import DynamicBatcher, Expected
from starchart.vision.images import set_pixel_limit

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from starchart.settings import Settings

log = logging.getLogger("starchart.clip")

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_TEMPLATES = ("a photo of a {}",)
TEXT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Label:
    label: str
    probability: float
    similarity: float

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability,
                "similarity": self.similarity}


@dataclass
class ClipInfo:
    """What ``/v1/models`` shows about the CLIP model."""

    id: str
    path: str
    engine: str = "transformers"
    dtype: str | None = None
    n_ctx: int | None = None  # the text model's context, in tokens
    weight_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "path": self.path, "dtype": self.dtype,
                "quantization": None, "n_ctx": self.n_ctx, "weight_bytes": self.weight_bytes,
                "format": "transformers", **self.extra}


def fetch_hint(name: str) -> str:
    return (f"fetch it once with `hf download {name}` (needs internet; the huggingface_hub"
            " package installs `hf`), or pass --clip /path/to/a/local/clip/folder")


class ClipModel:
    """A CLIP checkpoint, loaded once, shared by every request."""

    def __init__(self, name: str, *, max_batch: int = 32, max_wait_ms: float = 50.0,
                 max_image_pixels: int = 40_000_000, device: str | None = None) -> None:
        self.name = name
        self.info = ClipInfo(id=model_id(name), path=name)
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.max_image_pixels = max_image_pixels
        self.device = device
        self.load_error: StarchartError | None = None
        self._model: Any = None
        self._logit_scale = 1.0
        self._processor: Any = None
        self._tokenize_lock = threading.Lock()
        # Zero-shot asks for the same label prompts again and again: their embeddings are
        # kept (a row is the same whichever batch computed it, so this changes no result).
        self._text_cache = LRUCache(TEXT_CACHE_SIZE)
        self.images: DynamicBatcher[torch.Tensor, torch.Tensor] | None = None
        self.texts: DynamicBatcher[list[int], torch.Tensor] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, name: str | None = None) -> ClipModel:
        chosen = name or settings.clip
        if chosen is None:
            raise BadRequest("no CLIP model given: pass --clip", param="clip")
        return cls(chosen, max_batch=settings.clip_max_batch,
                   max_wait_ms=settings.clip_max_wait_ms,
                   max_image_pixels=settings.clip_max_image_pixels,
                   device=settings.clip_device)

    # -- life cycle ---------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load weights and processor (blocking: call it off the event loop).

        A hub id is only looked up in the local Hugging Face cache: serving
        never downloads, so an offline machine fails at once with the command
        that fetches the model instead of retrying the network for a minute.
        """
        if self.loaded:
            return
        try:
            self._load()
        except StarchartError as exc:
            self.load_error = exc
            raise

    async def load_in_background(self) -> None:
        """Load off the event loop; a failure is logged and kept for requests to report."""
        try:
            await asyncio.to_thread(self.load)
        except StarchartError as exc:
            log.error("could not load the CLIP model: %s", exc.message)
            return
        log.info("CLIP model %s loaded (%s, %s)", self.info.id, self.info.path, self.device)

    def _load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoTokenizer, CLIPModel, CLIPProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        source = self._source()
        local: dict[str, Any] = {"local_files_only": True}
        try:
            config = AutoConfig.from_pretrained(source, **local)
        except (OSError, ValueError) as exc:
            if Path(source).is_dir():
                raise NotFound(f"--clip {self.name}: the folder has no readable model config"
                               f" ({exc})", param="clip", code="model_not_found") from None
            raise NotFound(
                f"CLIP model {self.name!r} is not on this machine (not a folder, and not in"
                f" the Hugging Face cache); {fetch_hint(self.name)}",
                param="clip", code="model_not_found",
            ) from None
        if getattr(config, "model_type", None) != "clip":
            raise BadRequest(f"--clip {self.name}: this is a {config.model_type!r} model, not"
                             " a CLIP model", param="clip", code="model_not_found")
        try:
            model = CLIPModel.from_pretrained(source, **local)
            # The PIL image processor always: it resizes exactly as the original CLIP did
            # (PIL bicubic) and needs no torchvision.
            processor = CLIPProcessor(
                image_processor=CLIPImageProcessorPil.from_pretrained(source, **local),
                tokenizer=AutoTokenizer.from_pretrained(source, **local),
            )
        except (OSError, ValueError) as exc:
            raise NotFound(f"CLIP model {self.name!r} is incomplete on this machine ({exc});"
                           f" {fetch_hint(self.name)}", param="clip",
                           code="model_not_found") from None
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            # transformers types `to` through a decorator that takes the model for a str.
            model = model.to(device).eval()  # type: ignore[arg-type]
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise BadRequest(f"--clip-device {device}: cannot use this device ({exc})",
                             param="clip_device") from None
        self.device = device
        set_pixel_limit(self.max_image_pixels)
        self._processor = processor
        self._model = model
        self._logit_scale = float(model.logit_scale.detach().exp().item())
        self.info.path = str(source)
        self.info.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.info.n_ctx = self.context_length
        self.info.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.info.extra = {"embedding_dim": model.config.projection_dim,
                           "image_size": model.config.vision_config.image_size,
                           "logit_scale": self.logit_scale, "device": device}
        self.images = DynamicBatcher(self._image_batch, max_batch=self.max_batch,
                                     max_wait_ms=self.max_wait_ms, name="clip-images")
        self.texts = DynamicBatcher(self._text_batch, max_batch=self.max_batch,
                                    max_wait_ms=self.max_wait_ms, name="clip-texts")
        self.load_error = None

    def _source(self) -> str:
        path = Path(self.name).expanduser()
        if path.exists():
            if not path.is_dir():
                raise NotFound(f"--clip {self.name}: expected a folder holding a CLIP checkpoint"
                               " (config.json, weights, tokenizer, preprocessor config)",
                               param="clip", code="model_not_found")
            return str(path.resolve())
        if not is_hub_id(self.name):
            raise NotFound(f"--clip {self.name}: no folder at that path, and not a Hugging Face"
                           " hub id (such as openai/clip-vit-base-patch32)",
                           param="clip", code="model_not_found")
        return self.name

    def close(self) -> None:
        for batcher in (self.images, self.texts):
            if batcher is not None:
                batcher.close()
        self.images = self.texts = None
        self._model = self._processor = None

    def require(self) -> None:
        """Raise the error a request gets when the model cannot answer."""
        if self.loaded:
            return
        if self.load_error is not None:  # as for a chat model that failed to load
            raise Unavailable(f"the CLIP model could not be loaded: {self.load_error.message}",
                              param="model")
        raise Unavailable(f"the CLIP model {self.info.id!r} is still loading; try again shortly",
                          param="model")

    def batching_stats(self) -> dict[str, Any]:
        """Forward passes so far and their sizes, per batcher."""
        return {name: batcher.stats.as_dict()
                for name, batcher in (("images", self.images), ("texts", self.texts))
                if batcher is not None}

    # -- properties of the loaded model -------------------------------------------------

    @property
    def context_length(self) -> int:
        return int(self._model.config.text_config.max_position_embeddings)

    @property
    def logit_scale(self) -> float:
        """The learned temperature, exp'd: similarity = logit_scale x cosine."""
        return self._logit_scale

    # -- per-request work (caller's thread) ---------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """CLIP's preprocessing: resize the shortest side, center crop, mean/std."""
        pixels = self._processor.image_processor(images=list(images), return_tensors="pt")
        return list(pixels["pixel_values"].unbind(0))

    def tokenize(self, texts: Sequence[str], params: Sequence[str]) -> list[list[int]]:
        """Token ids per text; a text over the context is a 400 naming its parameter."""
        with self._tokenize_lock:  # a fast tokenizer is not safe to share across threads
            encoded = self._processor.tokenizer(list(texts), padding=False, truncation=False)
        ids: list[list[int]] = [list(x) for x in encoded["input_ids"]]
        limit = self.context_length
        for tokens, param in zip(ids, params, strict=True):
            if len(tokens) > limit:
                raise BadRequest(
                    f"{param} is {len(tokens)} tokens (start and end tokens included) but the"
                    f" CLIP text model reads at most {limit}; shorten it (texts are never"
                    " truncated)", param=param, code="context_length_exceeded",
                )
        return ids

    # -- batched forward passes (the batchers' worker threads) --------------------------

    def _image_batch(self, pixels: list[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        with torch.inference_mode():
            batch = torch.stack(pixels).to(self.device)
            pooled = self._model.vision_model(pixel_values=batch).pooler_output
            embeds = self._model.visual_projection(pooled)
            return list(_normalise(embeds).float().cpu().unbind(0))

    def _text_batch(self, ids: list[list[int]]) -> list[torch.Tensor]:
        import torch

        pad = self._processor.tokenizer.pad_token_id
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        with torch.inference_mode():
            pooled = self._model.text_model(input_ids=input_ids.to(self.device),
                                            attention_mask=mask.to(self.device)).pooler_output
            embeds = self._model.text_projection(pooled)
            return list(_normalise(embeds).float().cpu().unbind(0))

    # -- the async API ------------------------------------------------------------------

    def expect_images(self, count: int) -> Expected:
        """Announce images still being decoded, so a batch waits for them (see batching)."""
        self.require()
        assert self.images is not None
        return self.images.expect(count)

    async def embed_images(self, images: Sequence[Image.Image],
                           expected: Expected | None = None) -> torch.Tensor:
        """L2-normalised image embeddings, one row per image."""
        import torch

        self.require()
        assert self.images is not None
        with (nullcontext(expected) if expected is not None
              else self.images.expect(len(images))) as coming:
            pixels = await asyncio.to_thread(self.preprocess, images)
            return torch.stack(await self.images.run(pixels, coming))

    async def embed_texts(self, texts: Sequence[str],
                          params: Sequence[str] | None = None) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text."""
        return (await self.embed_texts_counted(texts, params))[0]

    async def embed_texts_counted(self, texts: Sequence[str], params: Sequence[str] | None = None
                                  ) -> tuple[torch.Tensor, int]:
        """The embeddings and how many tokens the texts took (for ``usage``)."""
        import torch

        self.require()
        assert self.texts is not None
        names = list(params) if params is not None else [f"input[{i}]" for i in range(len(texts))]
        with self.texts.expect(len(texts)) as coming:
            ids = await asyncio.to_thread(self.tokenize, texts, names)
            keys = [tuple(x) for x in ids]
            rows: dict[tuple[int, ...], torch.Tensor] = {}
            for key in keys:
                cached = self._text_cache.get(key)
                if cached is not None:
                    rows[key] = cached
            missing = list(dict.fromkeys(key for key in keys if key not in rows))
            coming.withdraw(len(texts) - len(missing))  # cached or repeated: not coming
            if missing:
                computed = await self.texts.run([list(k) for k in missing], coming)
                for key, row in zip(missing, computed, strict=True):
                    rows[key] = row
                    self._text_cache.put(key, row)
        return torch.stack([rows[key] for key in keys]), sum(len(x) for x in ids)

    async def similarity(self, images: Sequence[Image.Image], texts: Sequence[str],
                         expected: Expected | None = None) -> torch.Tensor:
        """``logit_scale.exp()`` x cosine, shape (images, texts)."""
        image_embeds, text_embeds = await asyncio.gather(
            self.embed_images(images, expected),
            self.embed_texts(texts, [f"texts[{i}]" for i in range(len(texts))]),
        )
        return self.logit_scale * image_embeds @ text_embeds.T

    async def label_embeddings(self, labels: Sequence[str],
                               templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        """One embedding per label: the re-normalised mean over its templated prompts."""
        prompts = [fill(template, label) for label in labels for template in templates]
        params = [f"labels[{i}]" for i in range(len(labels)) for _ in templates]
        embeds = await self.embed_texts(prompts, params)
        per_label = embeds.reshape(len(labels), len(templates), -1).mean(dim=1)
        return _normalise(per_label)

    async def classify(self, image: Image.Image, labels: Sequence[str],
                       templates: Sequence[str] = DEFAULT_TEMPLATES,
                       expected: Expected | None = None) -> list[Label]:
        """Zero-shot: labels with probabilities (softmax over labels), most likely first."""
        image_embeds, label_embeds = await asyncio.gather(
            self.embed_images([image], expected), self.label_embeddings(labels, templates))
        similarities = (self.logit_scale * image_embeds @ label_embeds.T)[0]
        probabilities = similarities.softmax(dim=-1)
        ranked = [Label(label, float(p), float(s))
                  for label, p, s in zip(labels, probabilities, similarities, strict=True)]
        return sorted(ranked, key=lambda x: x.probability, reverse=True)


class LRUCache:
    """The ``size`` most recently used text embeddings (only touched on the event loop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: tuple[int, ...]) -> Any:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def put(self, key: tuple[int, ...], row: Any) -> None:
        self._rows[key] = row
        self._rows.move_to_end(key)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)


def fill(template: str, label: str) -> str:
    """``template`` with ``{}`` replaced by ``label``.

    Not ``str.format``: a client's template must not reach attributes or
    indexes (``{0.__class__}``) or fail on a stray brace.
    """
    return template.replace("{}", label)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    unit: torch.Tensor = x / x.norm(p=2, dim=-1, keepdim=True)
    return unit
