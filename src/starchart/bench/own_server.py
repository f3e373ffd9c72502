"""``starchart serve`` in a child process on a free loopback port, for a bench run
without ``--url``. A child process, not a thread: the server must not share the
bench client's interpreter (its GIL and event loop) or the figures would be ours."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic_settings import NoDecode

from starchart.errors import StarchartError
from starchart.settings import Settings

# Settings that describe the bench client, or where the child listens: not forwarded.
_NOT_FORWARDED = frozenset({"home", "host", "port", "log_level", "bench_timeout"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment(settings: Settings, home: Path) -> dict[str, str]:
    """The server settings (model, engine, threads, ...) as STARCHART_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARCHART_")}
    for name, value in settings.model_dump().items():
        if name in _NOT_FORWARDED or value is None:
            continue
        env[f"STARCHART_{name.upper()}"] = _env_value(name, value)
    env["STARCHART_HOME"] = str(home)
    return env


def _env_value(name: str, value: object) -> str:
    """A setting as its STARCHART_* variable reads it back: lists comma-separated where
    the field says so (``NoDecode``, e.g. ``model``), else as JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        if NoDecode in Settings.model_fields[name].metadata and isinstance(value, list):
            return ",".join(str(v) for v in value)
        return json.dumps(value)
    return str(value)


@contextmanager
def own_server(settings: Settings, timeout: float = 300) -> Iterator[str]:
    """Yield the base URL of a ready ``starchart serve``; stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="starchart-bench-") as home:
        print(f"starchart bench: starting starchart serve ({settings.default_model},"
              f" {settings.engine}) on {url}", file=sys.stderr, flush=True)
        with server_process(
                [sys.executable, "-m", "starchart", "serve", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"], url,
                log=Path(home) / "server.log", env=child_environment(settings, Path(home)),
                timeout=timeout):
            yield url


@dataclass(frozen=True)
class Child:
    """A server ``server_child`` started: where it listens, and its process id."""

    url: str
    pid: int


@contextmanager
def server_process(argv: list[str], url: str, *, log: Path, env: dict[str, str] | None = None,
                   ready_path: str = "/ready", timeout: float = 300) -> Iterator[str]:
    """``server_child``, for a caller that wants only the URL."""
    with server_child(argv, url, log=log, env=env, ready_path=ready_path,
                      timeout=timeout) as child:
        yield child.url


@contextmanager
def server_child(argv: list[str], url: str, *, log: Path, env: dict[str, str] | None = None,
                 ready_path: str = "/ready", timeout: float = 300) -> Iterator[Child]:
    """Run the server ``argv`` (it listens at ``url``, its output goes to ``log``); yield
    it once ``GET url + ready_path`` answers 200; stop it afterwards."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, url + ready_path, timeout, log)
            yield Child(url, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], ready_url: str, timeout: float,
                log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text("utf-8", "replace")[-2000:].strip()
            why = "exited" if proc.poll() is not None else f"was not ready after {timeout:g} s"
            raise StarchartError(f"the server bench started {why}:\n{tail}")
        time.sleep(0.2)
