"""``starchart doctor --fix``: the install plan's steps for what the checks found
missing or broken, shown, confirmed, run with this venv's interpreter, re-checked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import TextIO

from starchart.doctor.install_plan import InstallPlan, Step
from starchart.doctor.report import Report

_SECTIONS = {"torch": "torch", "bitsandbytes": "bitsandbytes", "llamacpp": "llama-cpp-python"}


def needed(report: Report) -> list[Step]:
    """The plan's steps for the packages a check marked ``needs_install``, in plan order."""
    plan: InstallPlan | None = report.install_plan
    if plan is None:
        return []
    want = {package for name, package in _SECTIONS.items()
            if any(s.name == name and s.facts.get("needs_install") for s in report.sections)}
    bnb = next((s for s in report.sections if s.name == "bitsandbytes"), None)
    if "torch" in want and bnb is not None and bnb.facts.get("installed"):
        # bitsandbytes loads the library for torch's CUDA: a new torch gets its match.
        want.add("bitsandbytes")
    return [step for step in plan.steps if step.package in want]


def confirm(question: str, *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> bool:
    print(f"{question} [y/N] ", end="", file=out, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


Runner = Callable[..., subprocess.CompletedProcess[bytes]]


def apply(steps: list[Step], *, out: TextIO = sys.stdout,
          run: Runner = subprocess.run) -> bool:
    """Run the steps in order, stopping at the first that fails."""
    for number, step in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {step.shell()}", file=out, flush=True)
        done = run(list(step.argv), env={**os.environ, **dict(step.env)}, check=False)
        if done.returncode != 0:
            print(f"failed with exit code {done.returncode}: stopping here", file=out)
            return False
    return True
