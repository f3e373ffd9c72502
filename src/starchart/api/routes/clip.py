"""POST /v1/clip/classify, /v1/clip/similarity, /v1/embeddings (CLIP).

Images come in the request (a multipart file or a base64 data URI); a URL is
never fetched (see ``vision/images.py``). The work, batching included, is the
CLIP service's (``services/clip.py``); the body is read inside its methods.
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from starchart.api.bodies import json_body, parse, read_json
from starchart.api.clip_protocol import (
    Classification,
    ClassifyRequest,
    EmbeddingList,
    EmbeddingRequest,
    Similarity,
    SimilarityRequest,
)
from starchart.api.openapi import errors
from starchart.errors import BadRequest
from starchart.services.clip import ClipService, ImageSource

router = APIRouter()
M = TypeVar("M", bound=BaseModel)
ERRORS = errors(404, 503)


def _clip(request: Request) -> ClipService:
    clip: ClipService = request.app.state.clip
    return clip


async def _classify_body(request: Request) -> tuple[ClassifyRequest, ImageSource]:
    """A JSON body or a multipart form -> (request, image as data URI or bytes)."""
    content_type = request.headers.get("content-type", "application/json").lower()
    if not content_type.startswith("multipart/form-data"):
        parsed = parse(ClassifyRequest, await read_json(request))
        return parsed, parsed.image
    form = await request.form()
    image = form.get("image")
    if image is None:
        raise BadRequest("missing required parameter: 'image' (a file field)",
                         param="image", code="missing_required_parameter")
    labels = [v for v in form.getlist("labels") if isinstance(v, str)]
    if len(labels) == 1:  # one field: a comma-separated list
        labels = labels[0].split(",")
    templates = [v for v in form.getlist("templates") if isinstance(v, str)]
    fields = {"model": form.get("model"), "labels": [label.strip() for label in labels],
              "templates": templates or None,
              "image": image if isinstance(image, str) else "upload"}
    parsed = parse(ClassifyRequest, fields)
    return parsed, await image.read() if isinstance(image, UploadFile) else str(image)


async def _body(model: type[M], request: Request) -> M:
    return parse(model, await read_json(request))


@router.post("/v1/clip/classify", response_model=Classification, responses=ERRORS,
             openapi_extra=json_body(ClassifyRequest))
async def classify(request: Request) -> Classification:
    """Zero-shot classification of one image over the given labels (JSON or multipart)."""
    return await _clip(request).classify(partial(_classify_body, request))


@router.post("/v1/clip/similarity", response_model=Similarity, responses=ERRORS,
             openapi_extra=json_body(SimilarityRequest))
async def similarity(request: Request) -> Similarity:
    """logit_scale x cosine for every (image, text) pair: one row per image."""
    return await _clip(request).similarity(partial(_body, SimilarityRequest, request))


@router.post("/v1/embeddings", response_model=EmbeddingList, responses=ERRORS,
             openapi_extra=json_body(EmbeddingRequest))
async def embeddings(request: Request) -> EmbeddingList:
    """OpenAI's embeddings endpoint, served by the CLIP model (texts and images)."""
    return await _clip(request).embed(partial(_body, EmbeddingRequest, request))
