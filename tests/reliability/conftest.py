"""Fixtures of the reliability suite: a real `starchart serve` process, figures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_store_durability import ServeProcess
from tests.reliability.figures import FIGURES, record


@pytest.fixture
def report() -> Callable[[str, str], None]:
    """``report(guarantee, figure)``: print a measured figure with the results."""
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for guarantee, figure in FIGURES:
        terminalreporter.write_line(f"{guarantee}: {figure}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start `starchart serve` processes (extra flags as arguments); all stopped after."""
    started: list[ServeProcess] = []

    def start(*args: str, ready_timeout: float = 90) -> ServeProcess:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        process = ServeProcess(home, *args)
        process.ready_timeout = ready_timeout
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in kB (``VmRSS``, ``VmHWM``...), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process now."""
    return proc_status(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """Highest resident memory of a process so far (VmHWM)."""
    return proc_status(pid, "VmHWM")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
