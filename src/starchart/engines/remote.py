"""The remote engine: a model served by upstream OpenAI-compatible servers.

starchart does not grow a cluster of its own: a model too big for one box
runs in vLLM (tensor/pipeline parallel, Ray across nodes), SGLang, TGI, or
llama.cpp's server, and starchart fronts it, keeping its conversations, keys
and page on top. One ``RemoteEngine`` is one model name, served by one or
more interchangeable upstreams (replicas of the same model):

- One pooled client per upstream (``upstream_http``: httpx over asyncio streams,
  HTTP/1.1 keep-alive).
- Health: ``GET /v1/models`` every ``upstream_health_interval`` seconds; a
  request goes to the healthy upstream with the fewest requests outstanding
  (or round-robin). A connect failure marks the upstream down and the
  request goes to the next; the probe brings it back.
- Errors: an upstream's 4xx is passed on with its message; 5xx, an
  unreachable pool and a stream broken mid-way become 502, timeouts 504.

The HTTP routes relay requests byte for field (``open_stream``/``post_json``,
see ``api/relay.py``); conversation turns use the ``Engine`` interface
(``stream_chat``), which speaks to the same upstreams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from starchart.chat.templates import Message
from starchart.engines.base import (
    Engine,
    Finish,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TextDelta,
    Usage,
)
from starchart.engines.sse import EventParser, EventTooLarge
from starchart.engines.upstream_http import UpstreamClient
from starchart.engines.upstreams import UpstreamModel
from starchart.errors import BadGateway, GatewayTimeout, StarchartError, UpstreamRejected
from starchart.settings import Settings

log = logging.getLogger("starchart.remote")

# Failures that mean "this upstream did not take the request": try the next.
_NOT_TAKEN = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
              httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


# A server busy generating may answer its model list slowly (llama-cpp-python's
# does not answer at all until the current request is done): that is not down.
PROBE_READ_TIMEOUT = 30.0

# What is left after an upstream's [DONE] is normally the closing chunk, already on
# its way (measured: well under 20 ms on a loaded machine). The client's own [DONE]
# waits for it, so an upstream whose body goes on longer loses its connection instead.
DRAIN_TIMEOUT = 0.25
KEEPALIVE_EXPIRY = 4.0

# A whole (non-streamed) answer is read into memory before it is relayed: far above
# any real one (thousands of tokens with logprobs: a few MiB), far below what would
# hurt the server, as ``sse.MAX_EVENT_BYTES`` is for one event of a stream.
MAX_BODY_BYTES = 64 * 2**20
# An error answer is read for its message only.
ERROR_BODY_BYTES = 2**20


@dataclass(frozen=True)
class Timeouts:
    connect: float
    first_token: float
    idle: float
    health_interval: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(settings.upstream_connect_timeout, settings.upstream_first_token_timeout,
                   settings.upstream_idle_timeout, settings.upstream_health_interval)


@dataclass
class Upstream:
    url: str
    client: UpstreamClient
    healthy: bool = True  # optimistic until a probe or a request says otherwise
    outstanding: int = 0
    requests: int = 0  # taken over the server's life
    models: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "healthy": self.healthy, "outstanding": self.outstanding,
                "requests": self.requests, "models": self.models, "error": self.error}


def shown_url(url: str) -> str:
    """An upstream's URL as logs, errors, ``/v1/models`` and the doctor show it: a
    password in it (``http://user:password@host``) is not."""
    parsed = httpx.URL(url)
    if not parsed.password:
        return url
    return str(parsed.copy_with(username=parsed.username, password="***"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def upstream_error(response_status: int, body: bytes, url: str) -> StarchartError:
    """An upstream's error response -> ours: 4xx passed on, anything else 502."""
    message, param, code, type_ = None, None, None, None
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)
        error = error.get("error", error) if isinstance(error, dict) else error
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            param, code, type_ = error.get("param"), error.get("code"), error.get("type")
        elif isinstance(error, str):
            message = error
    text = str(message) if message else body.decode("utf-8", "replace")[:500]
    if response_status in (401, 403):
        # starchart's key (--upstream-key) was refused, not the client's: passed on
        # as a 401, it would send the client looking at its own key.
        return BadGateway(f"upstream {url} refused starchart's credentials"
                          f" ({response_status}: {text}): check --upstream-key, or api_key"
                          " in the models file")
    if 400 <= response_status < 500:
        return UpstreamRejected(response_status, text,
                                param=param if isinstance(param, str) else None,
                                code=code if isinstance(code, str) else None,
                                type_=type_ if isinstance(type_, str) else None)
    return BadGateway(f"upstream {url} answered {response_status}: {text}")


async def _read_body(response: httpx.Response, url: str, limit: int | None = None) -> bytes:
    """The whole body; ``BadGateway`` once it grows past ``limit`` (by default
    ``MAX_BODY_BYTES``; counted as decoded, so a compressed body is held to what it
    takes in memory)."""
    limit = MAX_BODY_BYTES if limit is None else limit
    pieces: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            what = "body" if response.status_code == 200 else \
                f"{response.status_code} answer whose body is"
            raise BadGateway(f"upstream {url} sent a {what} larger than {_size(limit)}")
        pieces.append(chunk)
    return b"".join(pieces)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 2**20 else f"{n >> 10} KiB"


class UpstreamStream:
    """An open streaming response: its SSE ``data`` payloads, as they arrive."""

    def __init__(self, engine: RemoteEngine, upstream: Upstream,
                 response: httpx.Response) -> None:
        self.upstream = upstream
        self._engine = engine
        self._response = response
        self._chunks = response.aiter_bytes()
        self._events = EventParser()
        self._ended = False
        self._broken: StarchartError | None = None  # raised once the events before it are out
        self._pending: str | None = None
        self._closed = False

    async def first(self, deadline: float) -> None:
        """Wait for the first event until ``deadline`` (the event loop's clock: what
        is left of the first-token timeout); kept for ``data()``. A body that ends
        before it is ``BadGateway``, still an HTTP status."""
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        self._pending = await self._next(left, first=True)
        if self._pending is None:
            raise BadGateway(f"the stream from upstream {self.upstream.url} ended before"
                             " its first event")

    async def _next(self, timeout: float, *, first: bool = False) -> str | None:
        """The next ``data`` payload; None at the end of the body."""
        events = self._events.events
        if events:
            return events.popleft()
        if self._broken is not None:
            raise self._broken
        if self._ended:
            return None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout) as deadline:
                while not events:
                    chunk = await anext(self._chunks, None)
                    if chunk is None:
                        self._ended = True
                        self._events.end()
                        break
                    self._events.feed(chunk)
                    # Idle means silence: any bytes end it (": ping" comments, part of
                    # an event). The first token's wait is for a token.
                    if not first:
                        deadline.reschedule(loop.time() + timeout)
        except EventTooLarge as exc:
            self._broken = BadGateway(f"upstream {self.upstream.url} sent {exc}")
            if not events:
                raise self._broken from None
        except TimeoutError:
            if first:
                raise GatewayTimeout(f"upstream {self.upstream.url} sent no first token within"
                                     f" {self._engine.timeouts.first_token:g} s") from None
            raise GatewayTimeout(f"upstream {self.upstream.url} sent nothing for {timeout:g} s"
                                 " waiting for the next token") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"the stream from upstream {self.upstream.url} broke:"
                             f" {_describe(exc)}") from exc
        return events.popleft() if events else None

    async def data(self) -> AsyncIterator[str]:
        """Payloads up to (not including) ``[DONE]``. A body that ends without
        ``[DONE]`` is a broken stream: ``BadGateway``."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if pending == "[DONE]":
                await self._drain()
                return
            yield pending
        while True:
            payload = await self._next(self._engine.timeouts.idle)
            if payload is None:
                raise BadGateway(f"the stream from upstream {self.upstream.url} ended"
                                 " before [DONE]")
            if payload == "[DONE]":
                await self._drain()
                return
            yield payload

    async def _drain(self) -> None:
        """Read the body to its end after ``[DONE]`` (usually just the closing
        empty chunk, already here): only a response read to the end gives its
        connection back to the pool; closed before that, the connection is dropped
        and the next request to this upstream pays for a new one. Done before the
        relay sends its own [DONE]: a client gone after that cancels the rest."""
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                async for _ in self._chunks:
                    pass

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.upstream.outstanding -= 1
            await self._response.aclose()


class RemoteEngine(Engine):
    """One model name served by one or more upstream OpenAI-compatible servers."""

    def __init__(self, model: UpstreamModel, timeouts: Timeouts, *, n_ctx: int,
                 balance: str = "least-outstanding") -> None:
        super().__init__()
        self.model = model
        self.timeouts = timeouts
        self.balance = balance
        self.info = ModelInfo(id=model.name, engine="remote",
                              path=",".join(shown_url(url) for url in model.urls),
                              n_ctx=n_ctx, format="remote",
                              extra={"upstream_model": model.upstream_model})
        # No read timeout in httpx: first-token and idle limits are ours (UpstreamStream).
        timeout = httpx.Timeout(connect=timeouts.connect, read=None, write=timeouts.idle,
                                pool=timeouts.connect)
        # Connections are kept for reuse (each stream holds one; they go back to the
        # pool read to the end, see UpstreamStream._drain) a little less long than
        # the 5 s servers built on uvicorn (vLLM, SGLang, starchart) keep them
        # idle, so a request never goes out on one the server is just closing.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64,
                              keepalive_expiry=KEEPALIVE_EXPIRY)
        self.upstreams = [
            Upstream(shown_url(url), UpstreamClient(url, api_key=model.api_key,
                                                    timeout=timeout, limits=limits))
            for url in model.urls
        ]
        self._turn = itertools.count()
        self._loaded = False

    # -- Engine interface ---------------------------------------------------

    def load(self) -> None:
        self._loaded = True  # nothing to load; reachability is the probes' business

    def close(self) -> None:
        self._loaded = False  # the clients close in serve_background's finally

    @property
    def loaded(self) -> bool:
        return self._loaded

    def tokenize(self, prompt: str) -> list[int]:
        # The tokenizer lives upstream. Conversations only use a count, to decide
        # how much old history to leave out: about four characters a token. The
        # upstream still refuses a prompt that is really too long (a 400, passed on).
        return [0] * max(1, len(prompt) // 4)

    # The upstream renders the prompt: an OpenAI API has no way to go on with an answer.
    can_continue = False

    @property
    def takes_tools(self) -> bool:
        # Stored conversations offer tools through the generic tool prompt: the
        # relay (chat completions) is where an upstream's own tool support is used.
        return False

    def render_chat(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] | None = None) -> str:
        # Only ever measured (see tokenize): the upstream applies the real template.
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def stream_tokens(self, prompt_tokens: list[int], params: SamplingParams
                      ) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError("a remote model is prompted with text (stream_chat)")

    def stream_chat(self, messages: Sequence[Message], params: SamplingParams,
                    tools: Sequence[dict[str, Any]] | None = None
                    ) -> AsyncIterator[StreamEvent]:
        return self._events("/v1/chat/completions",
                            {"messages": list(messages), **_sampling(params)})

    def stream_completion(self, prompt: str, params: SamplingParams
                          ) -> AsyncIterator[StreamEvent]:
        return self._events("/v1/completions", {"prompt": prompt, **_sampling(params)})

    async def serve_background(self) -> None:
        """Probe the upstreams for as long as the server runs; close the clients after."""
        try:
            while True:
                await self.probe()
                await asyncio.sleep(self.timeouts.health_interval)
        finally:
            await self.close_clients()

    async def close_clients(self) -> None:
        """Close every upstream's connections (at shutdown; after the doctor's probe)."""
        for upstream in self.upstreams:
            await upstream.client.aclose()

    # -- upstreams ----------------------------------------------------------

    async def probe(self, read_timeout: float = PROBE_READ_TIMEOUT) -> None:
        """Ask every upstream for its models: ``healthy``, ``error`` and ``models``."""
        await asyncio.gather(*(self._probe(u, read_timeout) for u in self.upstreams))

    async def _probe(self, upstream: Upstream, read_timeout: float) -> None:
        try:
            response = await upstream.client.send("GET", "/v1/models", timeout=httpx.Timeout(
                read_timeout, connect=self.timeouts.connect))
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            self._down(upstream, _describe(exc))
            return
        if response.status_code != 200:
            self._down(upstream, f"GET /v1/models answered {response.status_code}")
            return
        with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
            upstream.models = [m["id"] for m in response.json()["data"]]
        if not upstream.healthy:
            log.warning("upstream %s of %s is back", upstream.url, self.info.id)
        upstream.healthy, upstream.error = True, None

    def _down(self, upstream: Upstream, why: str) -> None:
        if upstream.healthy:
            log.warning("upstream %s of %s is down: %s", upstream.url, self.info.id, why)
        upstream.healthy, upstream.error = False, why

    def candidates(self) -> list[Upstream]:
        """The order to try upstreams in: healthy ones first, by the balance policy;
        the ones marked down last (a probe may simply not have seen them return)."""
        start = next(self._turn)
        ring = self.upstreams[start % len(self.upstreams):] + \
            self.upstreams[: start % len(self.upstreams)]
        healthy = [u for u in ring if u.healthy]
        if self.balance == "least-outstanding":
            healthy.sort(key=lambda u: u.outstanding)  # stable: ties keep the ring order
        return healthy + [u for u in ring if not u.healthy]

    async def _send(self, path: str, body: dict[str, Any], *, stream: bool,
                    on_sent: Callable[[], None] | None = None
                    ) -> tuple[Upstream, httpx.Response]:
        """Send to the first upstream that takes it (its ``outstanding`` counted)."""
        payload = {**body, "model": self.model.upstream_model, "stream": stream}
        failures: list[str] = []
        for upstream in self.candidates():
            upstream.outstanding += 1
            try:
                response = await self._send_once(upstream, path, payload, on_sent)
            except _NOT_TAKEN as exc:
                upstream.outstanding -= 1
                self._down(upstream, _describe(exc))
                failures.append(f"{upstream.url}: {_describe(exc)}")
                continue
            except httpx.HTTPError as exc:  # a write timeout: the upstream took nothing
                upstream.outstanding -= 1
                error = GatewayTimeout if isinstance(exc, httpx.TimeoutException) \
                    else BadGateway
                raise error(f"upstream {upstream.url}: {_describe(exc)}") from exc
            except BaseException:
                upstream.outstanding -= 1
                raise
            if response.status_code != 200:
                try:
                    content = await _read_body(response, upstream.url, ERROR_BODY_BYTES)
                except httpx.HTTPError as exc:
                    raise BadGateway(f"upstream {upstream.url} answered"
                                     f" {response.status_code}, then its answer broke:"
                                     f" {_describe(exc)}") from exc
                finally:
                    upstream.outstanding -= 1
                    await response.aclose()
                raise upstream_error(response.status_code, content, upstream.url)
            upstream.requests += 1
            return upstream, response
        raise BadGateway(f"no upstream of {self.info.id!r} could be reached: "
                         + "; ".join(failures))

    @staticmethod
    async def _send_once(upstream: Upstream, path: str, payload: dict[str, Any],
                         on_sent: Callable[[], None] | None = None) -> httpx.Response:
        """Send on a pooled connection (again on others when a kept-alive one turns
        out closed: ``upstream_http._Pool``). ``on_sent`` is called once the request
        is written, or could not be."""
        return await upstream.client.send("POST", path, payload, on_sent=on_sent)

    async def open_stream(self, path: str, body: dict[str, Any], *,
                          on_sent: Callable[[], None] | None = None) -> UpstreamStream:
        """Start a streamed request; returns once the first event has arrived, so
        a failure before it is still an HTTP error status, not an error event."""
        # One deadline for the answer's head and its first event together.
        deadline = asyncio.get_running_loop().time() + self.timeouts.first_token
        try:
            async with asyncio.timeout_at(deadline):
                upstream, response = await self._send(path, body, stream=True,
                                                      on_sent=on_sent)
        except TimeoutError:
            raise GatewayTimeout(f"no upstream of {self.info.id!r} answered within"
                                 f" {self.timeouts.first_token:g} s") from None
        stream = UpstreamStream(self, upstream, response)
        try:
            await stream.first(deadline)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def post_json(self, path: str, body: dict[str, Any], *,
                        on_sent: Callable[[], None] | None = None) -> dict[str, Any]:
        """A whole (non-streamed) answer, as the upstream sent it."""
        try:
            async with asyncio.timeout(self.timeouts.first_token):
                upstream, response = await self._send(path, body, stream=False,
                                                      on_sent=on_sent)
                try:
                    content = await _read_body(response, upstream.url)
                except httpx.HTTPError as exc:
                    raise BadGateway(f"the answer from upstream {upstream.url} broke:"
                                     f" {_describe(exc)}") from exc
                finally:
                    upstream.outstanding -= 1
                    await response.aclose()
        except TimeoutError:
            raise GatewayTimeout(f"the upstream answer for {self.info.id!r} took longer than"
                                 f" {self.timeouts.first_token:g} s") from None
        try:
            answer: dict[str, Any] = json.loads(content)
            return answer
        except ValueError as exc:
            raise BadGateway(f"upstream {upstream.url} sent a body that is not JSON") from exc

    async def _events(self, path: str, body: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        """The Engine view of a streamed answer: text deltas, then Finish."""
        stream = await self.open_stream(
            path, {**body, "stream_options": {"include_usage": True}})
        chat = path.endswith("chat/completions")
        reason: str | None = None
        usage: Usage | None = None
        pieces = 0
        try:
            async for payload in stream.data():
                try:
                    chunk = json.loads(payload)
                    if "error" in chunk:  # the upstream's own mid-stream error event
                        error = chunk["error"]  # (a string in TGI's)
                        message = error.get("message", error) if isinstance(error, dict) \
                            else error
                        raise BadGateway(f"upstream {stream.upstream.url}: {message}")
                    if chunk.get("usage"):
                        usage = Usage(int(chunk["usage"].get("prompt_tokens") or 0),
                                      int(chunk["usage"].get("completion_tokens") or 0))
                    texts: list[str] = []
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") if chat \
                            else choice.get("text")
                        if text:
                            texts.append(str(text))
                        reason = choice.get("finish_reason") or reason
                except (ValueError, TypeError, AttributeError) as exc:
                    # Not JSON, or not the shape of a chunk: a broken upstream, not our bug.
                    raise BadGateway(f"upstream {stream.upstream.url} sent an event that is"
                                     f" not a completion chunk: {payload[:200]!r}") from exc
                for text in texts:
                    pieces += 1
                    yield TextDelta(text)
        finally:
            await stream.aclose()
        self.tokens_generated += usage.completion_tokens if usage else pieces
        yield Finish(reason or "stop",  # type: ignore[arg-type]
                     usage or Usage(0, pieces))


def _sampling(params: SamplingParams) -> dict[str, Any]:
    """Sampling parameters as OpenAI fields (plus the common extensions
    vLLM and llama.cpp's server read: top_k, min_p, repetition_penalty)."""
    out = {k: v for k, v in params.as_dict().items() if k != "ignore_eos"}
    if not out["stop"]:
        del out["stop"]
    if out["seed"] is None:
        del out["seed"]
    if params.ignore_eos:
        out["ignore_eos"] = True
    return out


def remote_engines(settings: Settings) -> list[RemoteEngine]:
    from starchart.engines.upstreams import upstream_models

    timeouts = Timeouts.from_settings(settings)
    return [RemoteEngine(m, timeouts, n_ctx=settings.n_ctx, balance=settings.upstream_balance)
            for m in upstream_models(settings)]
