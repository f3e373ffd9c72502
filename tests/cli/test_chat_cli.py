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


def test_ctrl_c_stops_the_answer_not_the_program(tmp_path: Path) -> None:
    import signal
    import threading
    import time

    env = {**os.environ, "STARCHART_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "starchart", "chat"], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(lambda: proc.stdout.read(1), "")),
                              daemon=True)
    reader.start()
    try:
        proc.stdin.write("/params max_tokens=3000 ignore_eos=true\nTell me a story.\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while "ignore_eos=True" not in "".join(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        mark = len("".join(out))
        while len("".join(out)) < mark + 40 and time.monotonic() < deadline:
            time.sleep(0.05)  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        proc.stdin.write("/params\n/exit\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    reader.join(timeout=5)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert "[stopped]" in stderr
    # The program carried on after the interrupted answer and ran /params.
    assert "".join(out).count("ignore_eos=True") == 2
