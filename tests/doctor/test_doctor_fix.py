"""`starchart doctor --fix` and the fix lines: pinned, with this venv's python, installable.

The fix runs through the real CLI in a subprocess; only pip is replaced, by a
module named ``pip`` first on PYTHONPATH that records its arguments (so
``sys.executable -m pip`` finds it) and installs nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from fake_smi import write_fake_nvidia_smi

from starchart.doctor import compat
from starchart.doctor.run import run_checks

BOXES = ["470.82.01-1xT4", "470.199.02-2xV100", "535.104.05-4xA100", "550.54.15-1xRTX3090",
         "570.124.06-2xRTX4090", None]
PINNED = {"torch", "bitsandbytes", "llama-cpp-python"}


def box_path(tmp_path: Path, stem: str | None) -> str:
    """PATH with a recorded nvidia-smi (or none), this venv, and no CUDA toolkit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if stem is not None:
        write_fake_nvidia_smi(bin_dir, stem, knows_compute_cap=not stem.startswith("470"))
    return os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), "/usr/bin", "/bin"])


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    root, log = tmp_path / "fakepip", tmp_path / "pip-calls.jsonl"
    (root / "pip").mkdir(parents=True)
    (root / "pip" / "__init__.py").write_text("")
    (root / "pip" / "__main__.py").write_text(
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'argv': sys.argv[1:],"
        " 'cmake_args': os.environ.get('CMAKE_ARGS')}) + '\\n')\n")
    return root, log


def doctor_fix(tmp_path: Path, stem: str | None, *flags: str,
               stdin: str = "") -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    root, log = fake_pip(tmp_path)
    env = {**os.environ, "PATH": box_path(tmp_path, stem), "PYTHONPATH": str(root),
           "STARCHART_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "starchart", "doctor", "--fix", *flags],
                          input=stdin, capture_output=True, text=True, timeout=180, env=env,
                          check=False)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, calls


def test_fix_yes_on_the_document_s_box_installs_the_cuda_stack(tmp_path):
    """Driver 470 + T4 with this venv's CPU torch and no bitsandbytes: --fix --yes runs
    the plan's torch and bitsandbytes lines with this interpreter, then checks again."""
    done, calls = doctor_fix(tmp_path, "470.82.01-1xT4", "--yes")
    assert "Traceback" not in done.stderr, done.stderr
    assert [c["argv"] for c in calls] == [
        ["install", "torch==2.7.1+cu118", "--index-url", "https://download.pytorch.org/whl/cu118"],
        ["install", "bitsandbytes==0.46.1"],
    ]
    out = done.stdout
    assert f"doctor --fix: 2 command(s) for {sys.executable}:" in out
    assert f"[1/2] {sys.executable} -m pip install torch==2.7.1+cu118" in out
    assert "checking again" in out
    # The fake pip installed nothing: the re-check still finds the CPU torch.
    assert out.count("starchart doctor: FAIL") == 2 and done.returncode == 1


def test_fix_asks_first_and_a_no_runs_nothing(tmp_path):
    done, calls = doctor_fix(tmp_path, "470.82.01-1xT4", stdin="n\n")
    assert calls == []
    assert "Run them? [y/N]" in done.stdout and "nothing run." in done.stdout


def test_fix_on_this_machine_has_nothing_to_do(tmp_path):
    done, calls = doctor_fix(tmp_path, None, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls == [] and "nothing the install plan can fix" in done.stdout


def _pip_installs(fix: str) -> list[list[str]]:
    """Every `... -m pip install ...` command in a fix line, as argv."""
    out = []
    for part in fix.split("&&"):
        words = shlex.split(part.strip().strip("`"))
        words = [w for w in words if not w.startswith("CMAKE_ARGS=")]
        if "-m" in words and words[words.index("-m") + 1:][:2] == ["pip", "install"]:
            out.append(words)
    return out


def _requirements(argv: list[str]) -> list[str]:
    args, skip = argv[argv.index("install") + 1:], False
    found = []
    for word in args:
        if skip:
            skip = False
        elif word in ("--index-url", "--find-links", "-w"):
            skip = True
        elif not word.startswith("-"):
            found.append(word)
    return found


def _installable_on_311(requirement: str) -> bool:
    name, _, pin = requirement.partition("==")
    if name == "torch":
        release, _, build = pin.partition("+")
        if not build:  # the CPU pin the Makefile always used
            return requirement == "torch==2.13.0"
        row = next((r for r in compat.TORCH_TABLE if r.torch == release), None)
        return row is not None and compat.python_has_wheels(row, "3.11") and \
            build in {compat.cuda_tag(c) for c in row.cuda}
    if name == "bitsandbytes":  # py3-none wheels
        return any(r.bnb == pin for r in compat.BNB_TABLE)
    return name == "llama-cpp-python" and pin == "0.3.36"  # built from source, any Python


@pytest.mark.parametrize("stem", BOXES)
def test_every_fix_line_is_pinned_and_installable(tmp_path, monkeypatch, stem):
    monkeypatch.setenv("PATH", box_path(tmp_path, stem))
    report = run_checks(tmp_path, use_nvml=False)
    fixes = [c.fix for c in report.checks if c.fix]
    installs = [argv for fix in fixes for argv in _pip_installs(fix)]
    if stem is not None:
        assert installs, "a GPU box with a CPU torch gets install lines"
    for argv in installs:
        assert argv[0] == sys.executable, argv
        requirements = _requirements(argv)
        assert requirements, argv
        for req in requirements:
            name = req.split("=")[0].split(">")[0].split("<")[0]
            if name in PINNED:
                assert "==" in req and _installable_on_311(req), req
            else:  # starchart's own declared range
                assert any(op in req for op in ("==", ">=", "<", "~=")), req
    if stem == "570.124.06-2xRTX4090":
        assert not any("downgrade" in f for f in fixes)
    text = " ".join(fixes)
    assert "torch==1.12.1" not in text and "pip install bitsandbytes " not in text + " "


def test_plan_on_the_2xv100_box_checks_torch_first(tmp_path):
    """StarChat on the recorded 2xV100 box (driver 470) with this venv's CPU torch: the
    plan sizes it across both GPUs, recommends nothing torch cannot run, and names the
    torch line to run first."""
    folder = tmp_path / "starchat-beta"
    folder.mkdir()
    data = Path(__file__).parent.parent / "data" / "configs" / "starchat-beta.json"
    (folder / "config.json").write_text(data.read_text())
    env = {**os.environ, "PATH": box_path(tmp_path, "470.199.02-2xV100"),
           "STARCHART_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "starchart", "plan", str(folder),
                           "--n-ctx", "2048"], capture_output=True, text=True, timeout=180,
                          env=env, check=False)
    out = done.stdout
    assert "2 GPUs together (Tesla V100-SXM2-32GB)" in out, out + done.stderr
    assert "torch cannot use the GPU" in out and "fix that first" in out
    assert (f"fix: {sys.executable} -m pip install torch==2.7.1+cu118 --index-url"
            " https://download.pytorch.org/whl/cu118") in out
    assert "Everything looks fine" not in out and "run: " not in out
    assert "--quantize" not in out
    assert done.returncode == 1
