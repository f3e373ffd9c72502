"""Two `starchart serve` processes on one database, for the replica tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.test_store_durability import ServeProcess


@contextmanager
def two_replicas(url: str, root: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Replicas A and B (homes ``root/a`` and ``root/b``) on the database at ``url``,
    started together: on a new database both migrate at once (one waits for the
    other). Each is checked alive and ready; both are stopped afterwards."""
    pair = []
    for name in ("a", "b"):
        home = root / name
        home.mkdir()
        pair.append(ServeProcess(home, "--database-url", url))
    threads = [threading.Thread(target=r.start) for r in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        for r in pair:
            assert r.proc is not None and r.proc.poll() is None, (r.home / "server.log").read_text()
            httpx.get(r.url + "/ready", timeout=5).raise_for_status()
        yield pair[0], pair[1]
    finally:
        for r in pair:
            r.stop()
