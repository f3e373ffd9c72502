"""A real `starchart serve` process on a free loopback port, for the benchmarks: the
package's own `server_process` (the one `starchart bench` uses) with the flags given."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starchart.bench.own_server import free_port, server_process

__all__ = ["free_port", "starchart_server"]


@contextmanager
def starchart_server(*flags: str, timeout: float = 300) -> Iterator[str]:
    """Start ``starchart serve FLAGS`` with its own data dir; yield its URL once ``/ready``
    answers 200 (every configured model loaded, CLIP included); stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="starchart-bench-") as home, server_process(
            [sys.executable, "-m", "starchart", "serve", "--port", str(port), "--home", home,
             "--log-level", "warning", *flags], url, log=Path(home) / "server.log",
            timeout=timeout):
        yield url
