"""Run every check (and, given a model, the memory plan) into one ``Report``."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from starchart.doctor import bnb, install_plan, llamacpp, nvidia, pytorch, system, versions
from starchart.doctor.planner import Plan, load_shape, plan
from starchart.doctor.report import Report, Section


def plan_section(result: Plan) -> Section:
    return Section("plan", result.as_dict(), [result.check()])


def run_checks(home: Path, *, model: str | None = None, n_ctx: int = 4096, batch: int = 1,
               use_nvml: bool = True) -> Report:
    """The whole doctor. A model that cannot be read raises ``StarchartError``
    before any check runs, so a typo costs no time."""
    shape = load_shape(model) if model is not None else None
    sys_facts = system.facts(home)
    gpus = nvidia.probe(use_nvml=use_nvml)
    # Importing torch costs seconds: only when there is a GPU (CUDA or Apple's) to ask about.
    apple_gpu = sys_facts.os.startswith("Darwin") and sys_facts.machine == "arm64"
    torch_facts = pytorch.probe(import_torch=bool(gpus.gpus) or apple_gpu)
    plan_ = install_plan.build(install_plan.Machine(
        gpus=gpus, python=platform.python_version(), machine=platform.machine(),
        system=platform.system(), nvcc=install_plan.nvcc_release()), python=sys.executable)
    sections = [
        system.section(sys_facts),
        nvidia.section(gpus),
        pytorch.section(torch_facts, gpus, plan_),
        bnb.section(gpus, torch_facts, plan_),
        llamacpp.section(llamacpp.probe(), sys_facts, gpus, plan_),
        versions.section(),
    ]
    if shape is not None:
        sections.append(plan_section(plan(shape, n_ctx=n_ctx, batch=batch, gpus=gpus,
                                          ram_available=sys_facts.ram_available)))
    return Report(sections, install_plan=plan_)


def run_plan(model: str, *, n_ctx: int = 4096, batch: int = 1, use_nvml: bool = True) -> Plan:
    """Only the plan: the model's shape against this machine's free memory."""
    shape = load_shape(model)
    return plan(shape, n_ctx=n_ctx, batch=batch, gpus=nvidia.probe(use_nvml=use_nvml),
                ram_available=system.memory().available)
