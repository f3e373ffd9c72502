"""CLIP wire models: ``/v1/clip/classify``, ``/v1/clip/similarity``, ``/v1/embeddings``.

The shape checks are pydantic's; the checks that depend on the server's
limits (``clip_max_labels``, ``clip_max_images``) are ``check(limits)``,
called once the request is parsed, so a multipart upload and a JSON body go
through the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from starchart.api.protocol import Text, WireModel
from starchart.errors import BadRequest
from starchart.settings import Settings
from starchart.vision.clip import DEFAULT_TEMPLATES

MAX_TEMPLATES = 100  # CLIP's own ImageNet prompt set has 80


@dataclass(frozen=True)
class ClipLimits:
    max_labels: int
    max_images: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipLimits:
        return cls(max_labels=settings.clip_max_labels, max_images=settings.clip_max_images)


def check_count(items: list[str], param: str, limit: int, setting: str | None,
                what: str) -> None:
    if not items:
        raise BadRequest(f"{param}: give at least one {what}", param=param)
    if len(items) > limit:
        where = f" (setting {setting})" if setting else ""
        raise BadRequest(f"{param}: {len(items)} {what}s given; the limit is {limit}{where}",
                         param=param)


def check_texts(texts: list[str], param: str) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise BadRequest(f"{param}[{i}] is empty", param=f"{param}[{i}]")


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    image: Text = Field(description="A base64 data URI (data:image/png;base64,...).")
    labels: list[Text]
    templates: list[Text] | None = None

    def check(self, limits: ClipLimits) -> None:
        check_count(self.labels, "labels", limits.max_labels, "clip_max_labels", "label")
        check_texts(self.labels, "labels")
        seen: dict[str, int] = {}
        for i, label in enumerate(self.labels):
            if label in seen:
                raise BadRequest(f"labels[{i}] repeats labels[{seen[label]}] ({label!r})",
                                 param=f"labels[{i}]")
            seen[label] = i
        if self.templates is not None:
            check_count(self.templates, "templates", MAX_TEMPLATES, None, "template")
            for i, template in enumerate(self.templates):
                if "{}" not in template:
                    raise BadRequest(f"templates[{i}] has no {{}} where the label goes"
                                     f" (got {template!r}; e.g. 'a photo of a {{}}')",
                                     param=f"templates[{i}]")

    @property
    def prompt_templates(self) -> tuple[str, ...]:
        return tuple(self.templates) if self.templates else DEFAULT_TEMPLATES


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    images: list[Text] = Field(description="Base64 data URIs.")
    texts: list[Text]

    def check(self, limits: ClipLimits) -> None:
        check_count(self.images, "images", limits.max_images, "clip_max_images", "image")
        check_count(self.texts, "texts", limits.max_labels, "clip_max_labels", "text")
        check_texts(self.texts, "texts")


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; an ``input`` item that is an image data URI is an image."""

    model_config = ConfigDict(extra="ignore")

    model: Text | None = None
    input: Text | list[Text]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(None, ge=1)
    user: Text | None = None

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def check(self, limits: ClipLimits, image_flags: list[bool]) -> None:
        inputs = self.inputs
        if not inputs:
            raise BadRequest("input: give at least one text or image", param="input")
        images = sum(image_flags)
        if images > limits.max_images:
            raise BadRequest(f"input: {images} images given; the limit is {limits.max_images}"
                             " (setting clip_max_images)", param="input")
        texts = len(inputs) - images
        if texts > limits.max_labels:
            raise BadRequest(f"input: {texts} texts given; the limit is {limits.max_labels}"
                             " (setting clip_max_labels)", param="input")
        for i, (text, is_image) in enumerate(zip(inputs, image_flags, strict=True)):
            if not is_image and not text.strip():
                param = "input" if isinstance(self.input, str) else f"input[{i}]"
                raise BadRequest(f"{param} is empty", param=param)


# -- responses ----------------------------------------------------------------------------


class LabelScore(WireModel):
    label: str
    probability: float
    similarity: float


class Classification(WireModel):
    object: Literal["clip.classification"] = "clip.classification"
    model: str
    labels: list[LabelScore] = Field(description="Most likely first.")
    templates: list[str]
    logit_scale: float


class Similarity(WireModel):
    object: Literal["clip.similarity"] = "clip.similarity"
    model: str
    similarity: list[list[float]] = Field(description="logit_scale x cosine; a row per image,"
                                                      " a column per text.")
    logit_scale: float


class Embedding(WireModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or with encoding_format"
                                                     " base64 their float32 little-endian"
                                                     " bytes in base64.")


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(WireModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
