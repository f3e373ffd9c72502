"""A real `starchart serve` process on a free loopback port, for the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat_ready(url: str) -> bool:
    return httpx.get(url + "/ready", timeout=1).status_code == 200


@contextmanager
def starchart_server(*flags: str, ready: Callable[[str], bool] = chat_ready,
                     timeout: float = 300) -> Iterator[str]:
    """Start ``starchart serve FLAGS`` with its own data dir; yield its URL once ``ready``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    home = tempfile.mkdtemp(prefix="starchart-bench-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "starchart", "serve", "--port", str(port), "--home", home,
         "--log-level", "warning", *flags],
        stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready(url):
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the server ({' '.join(flags)}) did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
