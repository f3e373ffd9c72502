"""A real `starchart serve` process on a free loopback port, for the benchmarks: the
package's own `server_process` (the one `starchart bench` uses) with the flags given."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starchart.bench.own_server import free_port, server_process

__all__ = ["cpu_seconds", "free_port", "listening_pid", "starchart_server"]


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


def listening_pid(url: str) -> int | None:
    """The process listening on ``url``'s loopback port (Linux: /proc), or None."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
                   for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
