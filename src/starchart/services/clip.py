"""The CLIP model as the API serves it: one method per endpoint.

Each method announces its images to the batcher before the request body is
even read (``expect_images(1)``, corrected once the body says how many): a
batch being formed then waits for a request that has arrived instead of
leaving without it. That is why a method takes ``read``, the coroutine
function that reads and parses the body, rather than the parsed body.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image

from starchart.api.clip_protocol import (
    Classification,
    ClassifyRequest,
    ClipLimits,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    LabelScore,
    Similarity,
    SimilarityRequest,
)
from starchart.errors import BadRequest, NotFound
from starchart.services.chat import ChatService
from starchart.settings import Settings
from starchart.vision.clip import DEFAULT_CLIP, ClipModel
from starchart.vision.images import decode_data_uri, is_image_data_uri, open_image

ImageSource = str | bytes  # a data URI, or the bytes of an uploaded file


class ClipService:
    def __init__(self, model: ClipModel | None, settings: Settings, chat: ChatService) -> None:
        self.clip = model
        self.limits = ClipLimits.from_settings(settings)
        self.chat = chat

    @classmethod
    def from_settings(cls, settings: Settings, chat: ChatService) -> ClipService:
        # CLIP (--clip) loads beside the chat model; a failure to load leaves chat serving.
        return cls(ClipModel.from_settings(settings) if settings.clip else None, settings, chat)

    # -- life cycle and state -------------------------------------------------------------

    async def load(self) -> None:
        if self.clip is not None:
            await self.clip.load_in_background()

    def close(self) -> None:
        if self.clip is not None:
            self.clip.close()

    @property
    def load_error(self) -> str | None:
        error = self.clip.load_error if self.clip is not None else None
        return error.message if error is not None else None

    def loaded(self) -> dict[str, bool]:
        """The configured CLIP model (if any) and whether it is loaded, for ``/ready``."""
        return {self.clip.info.id: self.clip.loaded} if self.clip is not None else {}

    def model_entries(self) -> list[dict[str, Any]]:
        """The CLIP model's row of ``GET /v1/models`` (none without --clip)."""
        clip = self.clip
        if clip is None:
            return []
        state = "loaded" if clip.loaded else "failed" if clip.load_error else "loading"
        return [{"id": clip.info.id, "kind": "clip", "loaded": clip.loaded, "state": state,
                 "memory_bytes": clip.info.weight_bytes,
                 **clip.info.as_dict(), "batching": clip.batching_stats()}]

    def _served(self, model: str | None = None) -> ClipModel:
        """The CLIP model, loaded, or the error that says why there is none."""
        clip = self.clip
        if clip is None:
            raise NotFound("no CLIP model is served here: start the server with --clip MODEL"
                           f" (for example --clip {DEFAULT_CLIP}, or a local folder)",
                           param="model", code="model_not_found")
        clip.require()
        return clip

    def _check_model(self, clip: ClipModel, model: str | None) -> None:
        if model is not None and model not in (clip.info.id, clip.name):
            kind = " is a chat model, and" if model in self.chat.engines else ""
            raise NotFound(f"model {model!r}{kind} is not the CLIP model served here"
                           f" ({clip.info.id!r}); leave 'model' out or name that one",
                           param="model", code="model_not_found")

    async def _decode(self, clip: ClipModel, sources: list[tuple[ImageSource, str]]
                      ) -> list[Image.Image]:
        """(data URI or raw bytes, param) -> RGB images, decoded off the event loop."""

        def decode() -> list[Image.Image]:
            images = []
            for source, param in sources:
                data = (decode_data_uri(source, param=param) if isinstance(source, str)
                        else source)
                images.append(open_image(data, param=param, max_pixels=clip.max_image_pixels))
            return images

        return await asyncio.to_thread(decode)

    # -- the endpoints --------------------------------------------------------------------

    async def classify(self, read: Callable[[], Awaitable[tuple[ClassifyRequest, ImageSource]]]
                       ) -> Classification:
        """Zero-shot classification of one image over the request's labels."""
        clip = self._served()
        with clip.expect_images(1) as expected:
            body, source = await read()
            self._check_model(clip, body.model)
            body.check(self.limits)
            templates = body.prompt_templates
            (image,) = await self._decode(clip, [(source, "image")])
            ranked = await clip.classify(image, body.labels, templates, expected)
        return Classification(
            model=clip.info.id, templates=list(templates), logit_scale=clip.logit_scale,
            labels=[LabelScore(label=x.label, probability=x.probability,
                               similarity=x.similarity) for x in ranked])

    async def similarity(self, read: Callable[[], Awaitable[SimilarityRequest]]) -> Similarity:
        """logit_scale x cosine for every (image, text) pair."""
        clip = self._served()
        with clip.expect_images(1) as expected:
            body = await read()
            self._check_model(clip, body.model)
            body.check(self.limits)
            expected.set_count(len(body.images))
            images = await self._decode(clip, [(uri, f"images[{i}]")
                                               for i, uri in enumerate(body.images)])
            matrix = await clip.similarity(images, body.texts, expected)
        return Similarity(model=clip.info.id, similarity=matrix.tolist(),
                          logit_scale=clip.logit_scale)

    async def embed(self, read: Callable[[], Awaitable[EmbeddingRequest]]) -> EmbeddingList:
        """Embeddings of texts and images (an input that is an image data URI is an image)."""
        clip = self._served()
        with clip.expect_images(1) as expected:
            body = await read()
            self._check_model(clip, body.model)
            inputs = body.inputs
            is_image = [is_image_data_uri(item) for item in inputs]
            body.check(self.limits, is_image)
            dim = int(clip.info.extra.get("embedding_dim", 0))
            if body.dimensions is not None and body.dimensions != dim:
                raise BadRequest(f"dimensions: this CLIP model's embeddings have {dim}"
                                 f" dimensions and cannot be shortened (got {body.dimensions})",
                                 param="dimensions")
            single = isinstance(body.input, str)
            image_at = [i for i, flag in enumerate(is_image) if flag]
            text_at = [i for i, flag in enumerate(is_image) if not flag]
            expected.set_count(len(image_at))
            rows: list[Any] = [None] * len(inputs)
            if image_at:
                images = await self._decode(clip, [
                    (inputs[i], "input" if single else f"input[{i}]") for i in image_at])
                embedded = await clip.embed_images(images, expected)
                for i, row in zip(image_at, embedded, strict=True):
                    rows[i] = row
        tokens = 0
        if text_at:
            params = ["input" if single else f"input[{i}]" for i in text_at]
            embeds, tokens = await clip.embed_texts_counted([inputs[i] for i in text_at], params)
            for i, row in zip(text_at, embeds, strict=True):
                rows[i] = row
        return EmbeddingList(
            model=clip.info.id, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
            data=[Embedding(index=i, embedding=_encode(row, body.encoding_format))
                  for i, row in enumerate(rows)])


def _encode(row: Any, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 format: the float32 little-endian bytes of the vector.
        return base64.b64encode(row.numpy().astype("<f4").tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values
