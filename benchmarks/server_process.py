"""A real `starchart serve` process on a free loopback port, for the benchmarks: the
package's own `server_child` (the one `starchart bench` uses) with the flags given."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starchart.bench.own_server import Child, free_port, server_child

__all__ = ["cpu_seconds", "free_port", "starchart_child", "starchart_server"]


@contextmanager
def starchart_child(*flags: str, timeout: float = 300) -> Iterator[Child]:
    """Start ``starchart serve FLAGS`` with its own data dir; yield it (its URL and pid)
    once ``/ready`` answers 200 (every configured model loaded, CLIP included); stop it
    afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="starchart-bench-") as home, server_child(
            [sys.executable, "-m", "starchart", "serve", "--port", str(port), "--home", home,
             "--log-level", "warning", *flags], url, log=Path(home) / "server.log",
            timeout=timeout) as child:
        yield child


@contextmanager
def starchart_server(*flags: str, timeout: float = 300) -> Iterator[str]:
    """``starchart_child``, yielding only its URL."""
    with starchart_child(*flags, timeout=timeout) as child:
        yield child.url


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
