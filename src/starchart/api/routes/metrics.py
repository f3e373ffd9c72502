"""GET /metrics: Prometheus text format (see ``starchart.metrics``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

router = APIRouter()


# Not JSON, so not in the OpenAPI schema: Prometheus defines the format.
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    # Off the event loop: the scrape reads the store (conversations stored).
    body, content_type = await asyncio.to_thread(request.app.state.metrics.exposition,
                                                 request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
