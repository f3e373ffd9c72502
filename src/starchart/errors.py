"""The one error type.

``StarchartError`` carries what the API needs to answer in OpenAI's shape:
an HTTP status, an error ``type``, a machine-readable ``code`` and the
``param`` that was wrong. Engines and the services raise it; ``api/errors.py``
turns it into ``{"error": {...}}`` (``ErrorResponse`` in ``api/protocol.py``);
the CLI prints its message.

    StarchartError
     ├── BadRequest            400 invalid_request_error
     │    └── ContextOverflow  400 context_length_exceeded
     ├── Unauthorized          401 invalid_api_key
     ├── NotFound              404 not_found / model_not_found
     ├── Conflict              409 conflict (e.g. unloading a model that is generating)
     ├── PayloadTooLarge       413 request_too_large
     ├── QueueFull             429 rate_limit_exceeded (+ Retry-After)
     ├── RateLimited           429 rate_limit_exceeded (+ Retry-After; per-key limits)
     ├── ClientLeft            499 client_closed_request (nobody reads it: the client left)
     ├── Unavailable           503 model_not_ready (still loading, or its load failed)
     │    ├── OverBudget       503 memory_budget_exceeded (+ the figures)
     │    └── ShuttingDown     503 shutting_down (+ Retry-After; SIGTERM received)
     ├── UpstreamRejected      an upstream's own 4xx, passed on (remote engine)
     ├── BadGateway            502 upstream_error (upstream 5xx, unreachable, broken stream)
     └── GatewayTimeout        504 upstream_timeout
"""

from __future__ import annotations


class StarchartError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(StarchartError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class ContextOverflow(BadRequest):
    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, n_ctx: int, *, param: str = "messages"):
        super().__init__(
            f"This model's context window is {n_ctx} tokens, but the prompt is"
            f" {prompt_tokens} tokens (at least one token must be left to generate)."
            " Shorten the prompt or start the server with a larger --n-ctx.",
            param=param,
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class Unauthorized(StarchartError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(StarchartError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(StarchartError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(StarchartError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class QueueFull(StarchartError):
    """Every sequence slot is busy and the waiting queue is full (``--max-queue``)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(StarchartError):
    """An API key used its requests or tokens per minute (``--rate-limit-*``)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class ClientLeft(StarchartError):
    """The client went away before its answer was ready: the work was stopped.

    Normal, not a failure (logged at INFO); 499 as nginx logs it, for the metrics.
    """

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class Unavailable(StarchartError):
    status = 503
    type = "server_error"
    code = "model_not_ready"


class OverBudget(Unavailable):
    """Loading a model would exceed --memory-budget even with every idle model unloaded.

    ``memory``: the figures, in bytes (needed, budget, loaded), also in the error body."""

    code = "memory_budget_exceeded"

    def __init__(self, message: str, *, needed: int, budget: int, loaded: int):
        super().__init__(message, param="model")
        self.memory = {"needed": needed, "budget": budget, "loaded": loaded}


class ShuttingDown(Unavailable):
    """The server received SIGTERM: it takes no new work, and cuts what is left at the deadline."""

    code = "shutting_down"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamRejected(StarchartError):
    """An upstream server refused the request (4xx): its status and message, passed on."""

    type = "invalid_request_error"

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type_: str | None = None):
        super().__init__(message, param=param, code=code or "upstream_rejected")
        self.status = status
        if type_:
            self.type = type_


class BadGateway(StarchartError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class GatewayTimeout(StarchartError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"
