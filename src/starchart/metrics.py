"""Prometheus metrics of one server (``GET /metrics``), with ``prometheus-client``.

Each app owns its ``ServerMetrics`` and with it its own ``CollectorRegistry``
(never the process-global one): tests build many apps in one process, and two
servers in one process must not mix their figures.

Where the figures come from, each at one seam:

- HTTP requests by route and status, and their duration: ``MetricsMiddleware``
  (ASGI, outermost, so refusals such as 401 are counted too);
- tokens, time to first token, inter-token latency, generation duration,
  running/queued streams: ``ServerMetrics.track`` around the service layer's
  event stream, and one ``Generation`` per answer the relay passes through from
  an upstream (``api/relay.py``), so remote models count like local ones;
- model load time: recorded by whoever loads the engines; weight bytes, CLIP
  images encoded and conversations stored: read when scraped.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starchart.engines.base import Engine, Finish, StreamEvent

M = TypeVar("M", bound=MetricWrapperBase)

__all__ = ["Generation", "MetricsMiddleware", "ServerMetrics"]

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                    600.0)


class _ScrapeTime:
    """Figures read when scraped, from objects that already keep them."""

    def __init__(self, engines: Callable[[], Mapping[str, Engine]],
                 clip_images: Callable[[], tuple[str, int] | None],
                 conversations: Callable[[], int] | None) -> None:
        self.engines, self.clip_images, self.conversations = engines, clip_images, conversations

    def collect(self) -> Iterable[Metric]:
        weights = GaugeMetricFamily("starchart_model_weight_bytes",
                                    "Bytes of weights of each model (as loaded).",
                                    labels=["model"])
        for name, engine in self.engines().items():
            if engine.info.weight_bytes is not None:
                weights.add_metric([name], float(engine.info.weight_bytes))
        yield weights
        # 0 while unloaded (--load-on-demand, --keep-alive, the memory budget) or loading.
        loaded = GaugeMetricFamily("starchart_model_loaded",
                                   "1 when the model is loaded, else 0.", labels=["model"])
        for name, engine in self.engines().items():
            loaded.add_metric([name], 1.0 if engine.loaded else 0.0)
        yield loaded
        images = CounterMetricFamily("starchart_clip_images_encoded",
                                     "Images the CLIP model has encoded.", labels=["model"])
        clip = self.clip_images()
        if clip is not None:
            images.add_metric([clip[0]], float(clip[1]))
        yield images
        if self.conversations is not None:
            yield GaugeMetricFamily("starchart_conversations_stored",
                                    "Conversations in the store (all API keys).",
                                    value=float(self.conversations()))


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        self.http_requests = Counter(
            "starchart_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(
            "starchart_http_request_duration_seconds",
            "HTTP request duration, to the end of the body (streams included), by route.",
            ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.prompt_tokens = Counter(
            "starchart_prompt_tokens",
            "Prompt tokens of finished generations (the engine reports them as it finishes).",
            ["model"], registry=r)
        self.completion_tokens = Counter(
            "starchart_completion_tokens",
            "Tokens generated, whatever the outcome: a cancelled or failed generation's"
            " count too (as in /v1/stats).", ["model"], registry=r)
        self.generations = Counter(
            "starchart_generations",
            "Generations by outcome: finished, error, or cancelled (the client went away).",
            ["model", "outcome"], registry=r)
        self.ttft = Histogram(
            "starchart_time_to_first_token_seconds",
            "From a generation's start (queue included) to its first text.", ["model"],
            buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(
            "starchart_inter_token_latency_seconds",
            "Time between consecutive pieces of text of one generation.", ["model"],
            buckets=ITL_BUCKETS, registry=r)
        self.duration = Histogram(
            "starchart_request_duration_seconds",
            "A generation from its start (queue included) to its end.", ["model"],
            buckets=DURATION_BUCKETS, registry=r)
        self.running = Gauge(
            "starchart_requests_running", "Generations that have produced their first event.",
            ["model"], registry=r)
        self.queued = Gauge(
            "starchart_requests_queued",
            "Generations accepted and waiting for their first event (queued or in prefill).",
            ["model"], registry=r)
        self.load_seconds = Gauge(
            "starchart_model_load_seconds", "How long loading each model took.", ["model"],
            registry=r)

    def watch(self, engines: Callable[[], Mapping[str, Engine]],
              clip_images: Callable[[], tuple[str, int] | None] = lambda: None,
              conversations: Callable[[], int] | None = None) -> None:
        """Register the figures read at scrape time."""
        self.registry.register(_ScrapeTime(engines, clip_images, conversations))

    def child(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, looked up once: prometheus_client's takes a lock
        and checks the values on every call, and a relayed request makes nine."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def model_loaded(self, model: str, seconds: float) -> None:
        self.load_seconds.labels(model).set(seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's Accept header asks for:
        Prometheus text 0.0.4 by default, OpenMetrics when asked."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def generation(self, model: str) -> Generation:
        """Start recording one generation (queued until its first event)."""
        return Generation(self, model)

    async def track(self, model: str, events: AsyncIterator[StreamEvent]
                    ) -> AsyncIterator[StreamEvent]:
        """Pass ``events`` through, timing them. Starts counting at the first ``anext``,
        which is when the engine is handed the work."""
        generation = self.generation(model)
        try:
            async for event in events:
                if isinstance(event, Finish):
                    generation.finished(event.usage.prompt_tokens,
                                        event.usage.completion_tokens)
                else:
                    generation.text(event.tokens)
                yield event
        except Exception:
            generation.outcome = "error"
            raise
        finally:
            generation.end()
            await events.aclose()  # type: ignore[attr-defined]


class Generation:
    """The figures of one generation, fed by whoever sees its events: ``track``
    for the engines' streams, the relay for a remote model's passed-through answer."""

    def __init__(self, metrics: ServerMetrics, model: str) -> None:
        self.metrics, self.model = metrics, model
        self.outcome = "cancelled"  # until it finishes or fails
        self._queued, self._running = metrics.child(metrics.queued, model), \
            metrics.child(metrics.running, model)
        self._start = time.perf_counter()
        self._last: float | None = None  # the previous text's time
        self._started = False
        self._generated = 0  # tokens the text so far covers
        self._queued.inc()

    def started(self) -> None:
        """Its first event arrived: running, no longer queued."""
        if not self._started:
            self._started = True
            self._queued.dec()
            self._running.inc()

    def text(self, tokens: int = 1) -> None:
        """A piece of text covering ``tokens`` generated tokens."""
        self.started()
        self._generated += tokens
        now = time.perf_counter()
        m = self.metrics
        if self._last is None:
            m.child(m.ttft, self.model).observe(now - self._start)
        else:
            m.child(m.itl, self.model).observe(now - self._last)
        self._last = now

    def finished(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.started()
        now = time.perf_counter()
        m = self.metrics
        m.child(m.prompt_tokens, self.model).inc(prompt_tokens)
        m.child(m.completion_tokens, self.model).inc(completion_tokens)
        m.child(m.duration, self.model).observe(now - self._start)
        if self._last is None:  # nothing generated: the first token is the finish
            m.child(m.ttft, self.model).observe(now - self._start)
        self.outcome = "finished"

    def end(self) -> None:
        m = self.metrics
        if self.outcome != "finished":
            # Cancelled or failed: the tokens generated were work done all the same
            # (/v1/stats and the per-key rate limit count them too).
            m.child(m.completion_tokens, self.model).inc(self._generated)
        (self._running if self._started else self._queued).dec()
        m.child(m.generations, self.model, self.outcome).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(other)"  # 404s, static files: one label


class MetricsMiddleware:
    """Counts every HTTP request by its route template (never the raw path: ids in
    paths would make one time series per conversation) and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app dies before answering
        start = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route(scope)
            m = self.metrics
            m.child(m.http_requests, scope["method"], route, str(status)).inc()
            m.child(m.http_duration, route).observe(time.perf_counter() - start)
