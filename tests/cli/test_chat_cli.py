"""`starchart chat`, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def starchart(*args: str, home: Path, stdin: str | None = None,
              timeout: int = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STARCHART_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "starchart", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_one_shot_prints_only_the_answer(tmp_path: Path) -> None:
    out = starchart("chat", "-p", "What is the capital of France?", "--temperature", "0",
                    "--system", "", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert out.stdout.endswith("\n") and out.stdout.count("\n") <= 3
    assert "loading" not in out.stdout


def test_default_system_prompt_answers_too(tmp_path: Path) -> None:
    out = starchart("chat", "-p", "What is the capital of France?", "--temperature", "0",
                    home=tmp_path)
    assert "Paris" in out.stdout


def test_repl_commands(tmp_path: Path) -> None:
    script = "\n".join([
        "/params temperature=0 max_tokens=30",
        "What is the capital of France?",
        "/params",
        "/system You are a pirate.",
        "/reset",
        "/bogus",
        "/exit",
    ]) + "\n"
    out = starchart("chat", home=tmp_path, stdin=script)
    assert out.returncode == 0, out.stderr
    assert "temperature=0.0" in out.stdout and "max_tokens=30" in out.stdout
    assert "Paris" in out.stdout
    assert "system prompt set to 'You are a pirate.'" in out.stdout
    assert "[conversation reset]" in out.stdout
    assert "/reset" in out.stdout  # /bogus prints the help


def test_bad_flag_value_is_a_clear_error(tmp_path: Path) -> None:
    out = starchart("chat", "-p", "hi", "--temperature", "-1", home=tmp_path)
    assert out.returncode == 2
    assert "temperature" in out.stderr and "Traceback" not in out.stderr


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    out = starchart("chat", "-p", "hi", "--model", "no-such-model", home=tmp_path)
    assert out.returncode == 1
    assert "unknown model 'no-such-model'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["serve", "chat"])
def test_help_lists_settings(command: str, tmp_path: Path) -> None:
    out = starchart(command, "--help", home=tmp_path)
    assert out.returncode == 0
    assert "--temperature" in out.stdout and "STARCHART_TEMPERATURE" in out.stdout
