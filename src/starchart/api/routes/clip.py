"""POST /v1/clip/classify, /v1/clip/similarity, /v1/embeddings (CLIP).

Images come in the request (a multipart file or a base64 data URI); a URL is
never fetched (see ``vision/images.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from starchart.api.clip_protocol import (
    ClassifyRequest,
    ClipLimits,
    EmbeddingRequest,
    SimilarityRequest,
)
from starchart.api.errors import validation_error
from starchart.errors import BadRequest, NotFound
from starchart.vision.clip import DEFAULT_CLIP, ClipModel
from starchart.vision.images import decode_data_uri, is_image_data_uri, open_image

router = APIRouter()


def model_entries(request: Request) -> list[dict[str, Any]]:
    """The CLIP model's rows in ``GET /v1/models`` (none without --clip)."""
    clip: ClipModel | None = getattr(request.app.state, "clip", None)
    if clip is None:
        return []
    return [{"id": clip.info.id, "object": "model", "created": 0, "owned_by": "starchart",
             "kind": "clip", "loaded": clip.loaded, **clip.info.as_dict(),
             "batching": clip.batching_stats()}]


def _served(request: Request) -> ClipModel:
    """The CLIP model, loaded, or the error that says why there is none."""
    clip: ClipModel | None = getattr(request.app.state, "clip", None)
    if clip is None:
        raise NotFound("no CLIP model is served here: start the server with --clip MODEL"
                       f" (for example --clip {DEFAULT_CLIP}, or a local folder)",
                       param="model", code="model_not_found")
    clip.require()
    return clip


def _check_model(request: Request, clip: ClipModel, model: str | None) -> None:
    if model is not None and model not in (clip.info.id, clip.name):
        chat = request.app.state.service.engines
        kind = " is a chat model, and" if model in chat else ""
        raise NotFound(f"model {model!r}{kind} is not the CLIP model served here"
                       f" ({clip.info.id!r}); leave 'model' out or name that one",
                       param="model", code="model_not_found")


def _json_body(model: type[Any]) -> dict[str, Any]:
    """OpenAPI docs for a body the handler reads itself (to announce its images first)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


async def _read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "application/json").lower()
    if not content_type.startswith("application/json"):
        raise BadRequest(f"send application/json (got {content_type!r})",
                         code="unsupported_media_type")
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}",
                         code="invalid_json") from None


def _limits(request: Request) -> ClipLimits:
    return ClipLimits.from_settings(request.app.state.settings)


def _parse(model: type[Any], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        from fastapi.exceptions import RequestValidationError

        raise validation_error(RequestValidationError(exc.errors())) from None


async def _decode_all(clip: ClipModel, sources: list[tuple[str | bytes, str]]
                      ) -> list[Image.Image]:
    """(data URI or raw bytes, param) -> RGB images, decoded off the event loop."""

    def decode() -> list[Image.Image]:
        images = []
        for source, param in sources:
            data = decode_data_uri(source, param=param) if isinstance(source, str) else source
            images.append(open_image(data, param=param, max_pixels=clip.max_image_pixels))
        return images

    return await asyncio.to_thread(decode)


async def _classify_request(request: Request) -> tuple[ClassifyRequest, str | bytes]:
    """A JSON body or a multipart form -> (request, image as data URI or bytes)."""
    content_type = request.headers.get("content-type", "application/json").lower()
    if not content_type.startswith("multipart/form-data"):
        parsed = _parse(ClassifyRequest, await _read_json(request))
        return parsed, parsed.image
    form = await request.form()
    image = form.get("image")
    if image is None:
        raise BadRequest("missing required parameter: 'image' (a file field)",
                         param="image", code="missing_required_parameter")
    labels = [v for v in form.getlist("labels") if isinstance(v, str)]
    if len(labels) == 1:  # one field: a comma-separated list
        labels = labels[0].split(",")
    labels = [label.strip() for label in labels]
    templates = [v for v in form.getlist("templates") if isinstance(v, str)]
    fields = {"model": form.get("model"), "labels": labels, "templates": templates or None,
              "image": image if isinstance(image, str) else "upload"}
    parsed = _parse(ClassifyRequest, fields)
    raw = await image.read() if isinstance(image, UploadFile) else str(image)
    return parsed, raw


# Each handler announces its images to the batcher before it even reads its body
# (expect_images(1), corrected once the body says how many): a batch being formed
# waits for a request that has arrived instead of leaving without it.


@router.post("/v1/clip/classify", openapi_extra=_json_body(ClassifyRequest))
async def classify(request: Request) -> dict[str, Any]:
    """Zero-shot classification of one image over the given labels (JSON or multipart)."""
    clip = _served(request)
    with clip.expect_images(1) as expected:
        body, image_source = await _classify_request(request)
        _check_model(request, clip, body.model)
        body.check(_limits(request))
        templates = body.prompt_templates
        (image,) = await _decode_all(clip, [(image_source, "image")])
        ranked = await clip.classify(image, body.labels, templates, expected)
    return {"object": "clip.classification", "model": clip.info.id,
            "labels": [label.as_dict() for label in ranked],
            "templates": list(templates), "logit_scale": clip.logit_scale}


@router.post("/v1/clip/similarity", openapi_extra=_json_body(SimilarityRequest))
async def similarity(request: Request) -> dict[str, Any]:
    """logit_scale x cosine for every (image, text) pair: one row per image."""
    clip = _served(request)
    with clip.expect_images(1) as expected:
        body = _parse(SimilarityRequest, await _read_json(request))
        _check_model(request, clip, body.model)
        body.check(_limits(request))
        expected.set_count(len(body.images))
        images = await _decode_all(clip, [(uri, f"images[{i}]")
                                          for i, uri in enumerate(body.images)])
        matrix = await clip.similarity(images, body.texts, expected)
    return {"object": "clip.similarity", "model": clip.info.id, "similarity": matrix.tolist(),
            "logit_scale": clip.logit_scale}


@router.post("/v1/embeddings", openapi_extra=_json_body(EmbeddingRequest))
async def embeddings(request: Request) -> dict[str, Any]:
    """OpenAI's embeddings endpoint, served by the CLIP model (texts and images)."""
    clip = _served(request)
    with clip.expect_images(1) as expected:
        body = _parse(EmbeddingRequest, await _read_json(request))
        _check_model(request, clip, body.model)
        inputs = body.inputs
        is_image = [is_image_data_uri(item) for item in inputs]
        body.check(_limits(request), is_image)
        dim = int(clip.info.extra.get("embedding_dim", 0))
        if body.dimensions is not None and body.dimensions != dim:
            raise BadRequest(f"dimensions: this CLIP model's embeddings have {dim} dimensions"
                             f" and cannot be shortened (got {body.dimensions})",
                             param="dimensions")
        single = isinstance(body.input, str)
        image_at = [i for i, flag in enumerate(is_image) if flag]
        text_at = [i for i, flag in enumerate(is_image) if not flag]
        expected.set_count(len(image_at))
        rows: list[Any] = [None] * len(inputs)
        tokens = 0
        if image_at:
            images = await _decode_all(clip, [(inputs[i], "input" if single else f"input[{i}]")
                                              for i in image_at])
            for i, row in zip(image_at, await clip.embed_images(images, expected), strict=True):
                rows[i] = row
    if text_at:
        texts = [inputs[i] for i in text_at]
        text_params = ["input" if single else f"input[{i}]" for i in text_at]
        embeds, tokens = await clip.embed_texts_counted(texts, text_params)
        for i, row in zip(text_at, embeds, strict=True):
            rows[i] = row
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": _encode(row, body)}
                 for i, row in enumerate(rows)],
        "model": clip.info.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(row: Any, body: EmbeddingRequest) -> list[float] | str:
    if body.encoding_format == "base64":
        # OpenAI's base64 format: the float32 little-endian bytes of the vector.
        return base64.b64encode(row.numpy().astype("<f4").tobytes()).decode("ascii")
    return row.tolist()
