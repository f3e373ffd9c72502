"""The CLIP endpoints on a real server (loopback), with the tiny CLIP loaded by --clip FOLDER."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings
from starchart.vision.clip import ClipModel

from tests.conftest import LiveServer, free_port
from tests.vision.helpers import data_uri, encode, make_image, png_claiming_size

LABELS = ["cat", "dog", "car"]
IMAGE = make_image(300, 200, 7)
PNG = encode(IMAGE)
URI = data_uri(PNG)


def wait_for_clip(client: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = [m for m in client.get("/v1/models").json()["data"] if m["kind"] == "clip"]
        if rows and rows[0]["loaded"]:
            return rows[0]
        time.sleep(0.05)
    raise RuntimeError("the CLIP model did not load")


@pytest.fixture(scope="module")
def clip_server(tiny_clip_dir: Path, engine: LlamaCppEngine,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), clip=str(tiny_clip_dir),
                        clip_max_labels=6, clip_max_images=3, clip_max_image_pixels=1_000_000,
                        clip_max_wait_ms=20)
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def client(clip_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=clip_server.url, timeout=60) as http:
        wait_for_clip(http)
        yield http


@pytest.fixture(scope="module")
def local(tiny_clip_dir: Path) -> Iterator[ClipModel]:
    """The same model in-process: what the server must answer."""
    model = ClipModel(str(tiny_clip_dir), max_batch=1, max_wait_ms=0)
    model.load()
    yield model
    model.close()


def error_of(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"]
    return error


def test_models_lists_the_clip_model(client: httpx.Client, tiny_clip_dir: Path) -> None:
    data = client.get("/v1/models").json()["data"]
    kinds = {m["kind"]: m for m in data}
    assert set(kinds) == {"chat", "clip"}
    clip = kinds["clip"]
    assert clip["id"] == tiny_clip_dir.name and clip["loaded"] is True
    assert clip["engine"] == "transformers" and clip["n_ctx"] == 77
    assert clip["embedding_dim"] == 16 and clip["weight_bytes"] > 0
    assert set(clip["batching"]) == {"images", "texts"}


def test_the_routes_are_documented(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, field in [("/v1/clip/classify", "labels"), ("/v1/clip/similarity", "texts"),
                        ("/v1/embeddings", "input")]:
        schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert field in schema["properties"]


def test_classify_json(client: httpx.Client, local: ClipModel) -> None:
    response = client.post("/v1/clip/classify", json={"image": URI, "labels": LABELS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "clip.classification" and body["model"] == local.info.id
    assert body["templates"] == ["a photo of a {}"]
    expected = asyncio.run(local.classify(IMAGE, LABELS))
    assert [x["label"] for x in body["labels"]] == [x.label for x in expected]
    for got, want in zip(body["labels"], expected, strict=True):
        assert got["probability"] == pytest.approx(want.probability, abs=1e-5)
        assert got["similarity"] == pytest.approx(want.similarity, abs=1e-5)
    probabilities = [x["probability"] for x in body["labels"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_classify_multipart_with_templates(client: httpx.Client, local: ClipModel) -> None:
    templates = ["a photo of a {}", "a drawing of a {}"]
    response = client.post(
        "/v1/clip/classify", files={"image": ("cat.png", PNG, "image/png")},
        data={"labels": "cat, dog,car", "templates": templates},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["templates"] == templates
    expected = {x.label: x for x in asyncio.run(local.classify(IMAGE, LABELS, templates))}
    for got in body["labels"]:
        assert got["probability"] == pytest.approx(expected[got["label"]].probability, abs=1e-5)
    # Labels as repeated fields may hold commas.
    repeated = client.post("/v1/clip/classify", files={"image": ("x.png", PNG, "image/png")},
                           data={"labels": ["red, white", "blue"]})
    assert {x["label"] for x in repeated.json()["labels"]} == {"red, white", "blue"}


def test_similarity_matrix(client: httpx.Client, local: ClipModel) -> None:
    images = [make_image(120, 90, 1), make_image(90, 200, 2)]
    texts = ["a photo of a cat", "a car", "x"]
    response = client.post("/v1/clip/similarity",
                           json={"images": [data_uri(encode(im, "JPEG"), "image/jpeg")
                                            for im in images], "texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "clip.similarity"
    # JPEG is lossy: compare with what the server decoded, not with the originals.
    decoded = [Image.open(io.BytesIO(encode(im, "JPEG"))).convert("RGB") for im in images]
    expected = asyncio.run(local.similarity(decoded, texts)).numpy()
    assert np.array(body["similarity"]).shape == (2, 3)
    np.testing.assert_allclose(np.array(body["similarity"]), expected, atol=1e-5)


def test_embeddings_through_the_openai_client(clip_server: LiveServer, client: httpx.Client,
                                              local: ClipModel) -> None:
    openai = OpenAI(base_url=clip_server.url + "/v1", api_key="none")
    # The client asks for base64 by default and decodes it: both encodings are served.
    result = openai.embeddings.create(model=local.info.id, input=["a cat", URI])
    assert [d.index for d in result.data] == [0, 1]
    text = asyncio.run(local.embed_texts(["a cat"]))[0].numpy()
    image = asyncio.run(local.embed_images([IMAGE]))[0].numpy()
    np.testing.assert_allclose(result.data[0].embedding, text, atol=1e-5)
    np.testing.assert_allclose(result.data[1].embedding, image, atol=1e-5)
    assert result.usage.prompt_tokens == 4  # <start> a cat <end>
    floats = openai.embeddings.create(model=local.info.id, input="a cat",
                                      encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, text, atol=1e-5)
    raw = client.post("/v1/embeddings", json={"input": "a cat", "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(vector, text, atol=1e-5)


def test_concurrent_requests_are_batched_and_answer_the_same(client: httpx.Client,
                                                              local: ClipModel) -> None:
    images = [make_image(100 + 10 * i, 140, 20 + i) for i in range(6)]

    def one(image: Any) -> list[float]:
        response = client.post("/v1/embeddings", json={"input": data_uri(encode(image))})
        assert response.status_code == 200, response.text
        return response.json()["data"][0]["embedding"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        rows = list(pool.map(one, images))
    expected = asyncio.run(local.embed_images(images)).numpy()
    np.testing.assert_allclose(np.array(rows), expected, atol=1e-5)


BAD_CLASSIFY = [
    ({"image": "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
      "labels": LABELS}, 400, "image", "invalid_image"),
    ({"image": data_uri(PNG[: len(PNG) // 2]), "labels": LABELS}, 400, "image", "invalid_image"),
    ({"image": data_uri(png_claiming_size(40_000, 40_000)), "labels": LABELS}, 400, "image",
     "image_too_large"),
    ({"image": "https://127.0.0.1/cat.png", "labels": LABELS}, 400, "image", "invalid_image"),
    ({"image": URI, "labels": []}, 400, "labels", "invalid_value"),
    ({"image": URI, "labels": [f"l{i}" for i in range(7)]}, 400, "labels", "invalid_value"),
    ({"image": URI, "labels": ["cat", " "]}, 400, "labels[1]", "invalid_value"),
    ({"image": URI, "labels": ["cat", "cat"]}, 400, "labels[1]", "invalid_value"),
    ({"image": URI, "labels": ["cat", "word " * 80]}, 400, "labels[1]",
     "context_length_exceeded"),
    ({"image": URI, "labels": LABELS, "templates": ["no placeholder"]}, 400, "templates[0]",
     "invalid_value"),
    ({"image": URI, "labels": LABELS, "templates": []}, 400, "templates", "invalid_value"),
    ({"image": URI, "labels": LABELS, "templates": ["{} x"] * 101}, 400, "templates",
     "invalid_value"),
    ({"image": URI, "labels": LABELS, "templates": ["{0.__class__} {}"]}, 200, None, None),
    ({"image": URI}, 400, "labels", "missing_required_parameter"),
    ({"labels": LABELS}, 400, "image", "missing_required_parameter"),
    ({"image": URI, "labels": "cat"}, 400, "labels", "invalid_value"),
    ({"image": URI, "labels": LABELS, "model": "gpt-4"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD_CLASSIFY)
def test_bad_classify_requests(client: httpx.Client, body: dict[str, Any], status: int,
                               param: str | None, code: str | None) -> None:
    response = client.post("/v1/clip/classify", json=body)
    if status == 200:  # a template is filled by replacing {}, never by str.format
        assert response.status_code == 200, response.text
        return
    assert error_of(response, status, param)["code"] == code
    assert client.get("/health").status_code == 200


def test_bad_multipart_and_bodies(client: httpx.Client) -> None:
    not_image = client.post("/v1/clip/classify", files={"image": ("a.txt", b"hello", "text/plain")},
                            data={"labels": "cat,dog"})
    assert error_of(not_image, 400, "image")["code"] == "invalid_image"
    no_image = client.post("/v1/clip/classify", files={"x": ("a.png", PNG, "image/png")},
                           data={"labels": "cat"})
    error_of(no_image, 400, "image")
    empty_labels = client.post("/v1/clip/classify", files={"image": ("a.png", PNG, "image/png")},
                               data={"labels": ""})
    error_of(empty_labels, 400, "labels[0]")
    broken = client.post("/v1/clip/classify", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert error_of(broken, 400, None)["code"] == "invalid_json"
    text = client.post("/v1/clip/classify", content=b"hello",
                       headers={"content-type": "text/plain"})
    error_of(text, 400, None)


def test_bad_similarity_and_embeddings(client: httpx.Client) -> None:
    too_many = client.post("/v1/clip/similarity", json={"images": [URI] * 4, "texts": ["a"]})
    assert "clip_max_images" in error_of(too_many, 400, "images")["message"]
    no_texts = client.post("/v1/clip/similarity", json={"images": [URI], "texts": []})
    error_of(no_texts, 400, "texts")
    bad_second = client.post("/v1/clip/similarity",
                             json={"images": [URI, "data:image/png;base64,AAAA"], "texts": ["a"]})
    error_of(bad_second, 400, "images[1]")
    long_text = client.post("/v1/clip/similarity", json={"images": [URI], "texts": ["w " * 90]})
    assert error_of(long_text, 400, "texts[0]")["code"] == "context_length_exceeded"
    empty = client.post("/v1/embeddings", json={"input": []})
    error_of(empty, 400, "input")
    blank = client.post("/v1/embeddings", json={"input": ["a", ""]})
    error_of(blank, 400, "input[1]")
    tokens = client.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
    assert tokens.status_code == 400
    dims = client.post("/v1/embeddings", json={"input": "a", "dimensions": 8})
    error_of(dims, 400, "dimensions")
    bomb = client.post("/v1/embeddings", json={"input": [data_uri(png_claiming_size(9000, 9000))]})
    assert error_of(bomb, 400, "input[0]")["code"] == "image_too_large"
    chat_model = client.get("/v1/models").json()["data"][0]["id"]
    wrong = client.post("/v1/embeddings", json={"input": "a", "model": chat_model})
    assert "chat model" in error_of(wrong, 404, "model")["message"]
    # After all that, the server still answers.
    assert client.post("/v1/embeddings", json={"input": "a"}).status_code == 200


def test_without_clip_the_endpoints_say_how_to_start_it(api: httpx.Client) -> None:
    for path, body in [("/v1/clip/classify", {"image": URI, "labels": LABELS}),
                       ("/v1/clip/similarity", {"images": [URI], "texts": ["a"]}),
                       ("/v1/embeddings", {"input": "a"})]:
        error = error_of(api.post(path, json=body), 404, "model")
        assert error["code"] == "model_not_found" and "--clip" in error["message"]
    assert all(m["kind"] == "chat" for m in api.get("/v1/models").json()["data"])


def test_ready_counts_the_clip_model(client: httpx.Client, tiny_clip_dir: Path) -> None:
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["models"][tiny_clip_dir.name] is True
    assert len(ready.json()["models"]) == 2


def test_a_clip_model_that_cannot_load_leaves_chat_serving(
        engine: LlamaCppEngine, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, clip="openai/clip-vit-base-patch32")
    with LiveServer(create_app(settings, engines=[engine]), free_port(),
                    wait_ready=False) as server, \
            httpx.Client(base_url=server.url, timeout=60) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = http.get("/ready")
            if ready.json()["status"] != "loading":
                break
            time.sleep(0.05)
        # Not ready, and saying why: every configured model counts.
        assert ready.status_code == 503 and ready.json()["status"] == "error"
        assert ready.json()["models"] == {engine.info.id: True,
                                          "openai/clip-vit-base-patch32": False}
        assert "hf download openai/clip-vit-base-patch32" in ready.json()["error"]
        # A model that failed to load is unavailable (503), as for a chat model.
        response = http.post("/v1/clip/classify", json={"image": URI, "labels": LABELS})
        error = error_of(response, 503, "model")
        assert "hf download openai/clip-vit-base-patch32" in error["message"]
        clip = [m for m in http.get("/v1/models").json()["data"] if m["kind"] == "clip"]
        assert clip[0]["loaded"] is False
        chat = http.post("/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
        assert chat.status_code == 200
