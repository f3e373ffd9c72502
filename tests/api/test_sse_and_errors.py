"""Wire format and every bad input, checked on raw HTTP."""

import json

import httpx
import pytest

from tests.conftest import FRANCE


def sse_frames(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def test_stream_is_openai_sse(api: httpx.Client) -> None:
    body = {"messages": FRANCE, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = sse_frames(response)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert "Paris" in text


def test_health_and_ready(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    ready = api.get("/ready")
    assert ready.status_code == 200 and ready.json()["models"] == {"smollm2-135m-instruct": True}


def test_max_new_tokens_alias(api: httpx.Client) -> None:
    out = api.post("/v1/chat/completions", json={"messages": FRANCE, "max_new_tokens": 2,
                                                 "temperature": 0}).json()
    assert out["usage"]["completion_tokens"] == 2
    assert out["choices"][0]["finish_reason"] == "length"


def test_defaults_are_the_documents(api: httpx.Client) -> None:
    d = api.get("/v1/defaults").json()
    assert (d["temperature"], d["top_k"], d["top_p"], d["max_tokens"],
            d["repetition_penalty"]) == (0.2, 50, 0.95, 1024, 1.2)


BAD = [
    ("malformed json", b'{"messages": [', 400, "invalid_json", None),
    ("unknown model", {"model": "gpt-9", "messages": FRANCE}, 404, "model_not_found", "model"),
    ("empty messages", {"messages": []}, 400, "invalid_value", "messages"),
    ("missing messages", {"model": "smollm2-135m-instruct"}, 400,
     "missing_required_parameter", "messages"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "invalid_value", "messages[0].role"),
    ("non-string content", {"messages": [{"role": "user", "content": 42}]}, 400,
     "invalid_value", "messages[0].content"),
    ("negative temperature", {"messages": FRANCE, "temperature": -0.5}, 400,
     "invalid_value", "temperature"),
    ("top_p zero", {"messages": FRANCE, "top_p": 0}, 400, "invalid_value", "top_p"),
    ("top_p above one", {"messages": FRANCE, "top_p": 1.5}, 400, "invalid_value", "top_p"),
    ("max_tokens zero", {"messages": FRANCE, "max_tokens": 0}, 400, "invalid_value",
     "max_tokens"),
    ("n above one", {"messages": FRANCE, "n": 2}, 400, "invalid_value", "n"),
    ("empty stop", {"messages": FRANCE, "stop": [""]}, 400, "invalid_value", "stop"),
    ("prompt too long", {"messages": [{"role": "user", "content": "word " * 3000}]}, 400,
     "context_length_exceeded", "messages"),
]


@pytest.mark.parametrize("name,body,status,code,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input(api: httpx.Client, name: str, body: object, status: int, code: str,
                   param: str | None) -> None:
    if isinstance(body, bytes):
        response = api.post("/v1/chat/completions", content=body,
                            headers={"content-type": "application/json"})
    else:
        response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    assert "Traceback" not in response.text
    assert api.get("/health").status_code == 200


def test_context_overflow_names_lengths(api: httpx.Client) -> None:
    response = api.post("/v1/completions", json={"prompt": "word " * 3000})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "2048" in message and "prompt is" in message
    assert response.json()["error"]["param"] == "prompt"


def test_streaming_request_errors_before_streaming(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions",
                        json={"messages": [{"role": "user", "content": "word " * 3000}],
                              "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_body_over_limit_is_413(api: httpx.Client) -> None:
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (17 * 1024 * 1024) + b'"}]}'
    response = api.post("/v1/chat/completions", content=huge,
                        headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_chunked_body_over_limit_is_413(api: httpx.Client) -> None:
    def chunks():
        for _ in range(17):
            yield b"x" * (1024 * 1024)
    response = api.post("/v1/chat/completions", content=chunks(),
                        headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_route_is_json_404(api: httpx.Client) -> None:
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
