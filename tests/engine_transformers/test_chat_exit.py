"""`starchart chat --engine transformers` leaves promptly, every way a user leaves.

It used to answer and then hang in interpreter shutdown, waiting for transformers'
continuous-batching thread (not a daemon) that nobody stopped. The one-shot runs
as a user runs it (its own process: the hang was at interpreter exit); the
interactive ways out run in this process, where a batching thread still alive
after ``run_chat`` returns is exactly what the interpreter would wait for.
"""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from starchart.chat.terminal import run_chat
from starchart.settings import Settings

# Importing torch and transformers is most of it (~40 s on a loaded 2-core box);
# the hang never ended.
BOUND = 240.0


def test_one_shot_exits_zero_promptly(tiny_folder: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "starchart", "chat", "--engine", "transformers", "--model",
         str(tiny_folder), "--chat-template", "starchat", "--max-tokens", "4",
         "--temperature", "0", "-p", "hi"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BOUND,
        env={**os.environ, "STARCHART_HOME": str(tmp_path)})
    print(f"\nchat -p exited with {done.returncode} after {time.monotonic() - start:.1f} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the answer is printed"
    # The batching thread's INFO lines (cache size, start, stop) stay out of the chat.
    assert "ContinuousBatchingLogger" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def _ctrl_c_at_second_prompt() -> object:
    lines = iter(["hi"])

    def fake_input(prompt: str = "") -> str:
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise KeyboardInterrupt from None
    return fake_input


@pytest.mark.parametrize("way", ["/exit", "Ctrl-D", "Ctrl-C"])
def test_interactive_ways_out_stop_the_batching_thread(tiny_folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       way: str) -> None:
    if way == "Ctrl-C":
        monkeypatch.setattr(builtins, "input", _ctrl_c_at_second_prompt())
    else:  # input() reads sys.stdin; its end is Ctrl-D
        monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n/exit\n" if way == "/exit"
                                                      else "hi\n"))
    before = set(threading.enumerate())
    settings = Settings(home=tmp_path, engine="transformers", model=str(tiny_folder),
                        chat_template="starchat", max_tokens=4, temperature=0)
    assert run_chat(settings) == 0
    left = [t.name for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.daemon]
    assert left == [], f"after {way}, threads the interpreter would wait for: {left}"
    out = capsys.readouterr()
    assert out.out.count("> ") == 2  # answered "hi", then left at the next prompt
