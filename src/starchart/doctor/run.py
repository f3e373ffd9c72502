"""Run every check (and, given a model, the memory plan) into one ``Report``."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from starchart.doctor import bnb, install_plan, llamacpp, nvidia, pytorch, system, versions
from starchart.doctor.planner import ModelShape, Plan, Readiness, load_shape, plan
from starchart.doctor.report import Report, Section


def plan_section(result: Plan) -> Section:
    return Section("plan", result.as_dict(), [result.check()])


def machine_plan(gpus: nvidia.GpuProbe) -> install_plan.InstallPlan:
    """The install plan for this machine, written for this environment's interpreter."""
    return install_plan.build(install_plan.Machine(
        gpus=gpus, python=platform.python_version(), machine=platform.machine(),
        system=platform.system(), nvcc=install_plan.nvcc_release()), python=sys.executable)


def readiness(gpus: nvidia.GpuProbe, torch_facts: pytorch.TorchFacts,
              llama: llamacpp.LlamaFacts, plan_: install_plan.InstallPlan,
              bnb_works: bool | None = None) -> Readiness:
    """Can the installed software use the GPUs? Only asked when there are GPUs."""
    if not gpus.gpus:
        return Readiness()
    torch_gpu = torch_facts.cuda_available
    if bnb_works is None:
        bnb_works = torch_gpu and bnb.installed_version() is not None and bnb.run_probe().matmul
    return Readiness(
        torch_gpu=torch_gpu, torch_fix=pytorch.torch_fix(plan_),
        bnb=bnb_works, bnb_fix=bnb.install_line(plan_, "bitsandbytes") if torch_gpu
        else "fix the torch line first: " + pytorch.torch_fix(plan_),
        llama_gpu=bool(llama.gpu_offload), llama_fix=llamacpp.gpu_advice(plan_))


def run_checks(home: Path, *, model: str | None = None, n_ctx: int = 4096, batch: int = 1,
               use_nvml: bool = True) -> Report:
    """The whole doctor. A model that cannot be read raises ``StarchartError``
    before any check runs, so a typo costs no time."""
    shape = load_shape(model, home) if model is not None else None
    sys_facts = system.facts(home)
    gpus = nvidia.probe(use_nvml=use_nvml)
    # Importing torch costs seconds: only when there is a GPU (CUDA or Apple's) to ask about.
    apple_gpu = sys_facts.os.startswith("Darwin") and sys_facts.machine == "arm64"
    torch_facts = pytorch.probe(import_torch=bool(gpus.gpus) or apple_gpu)
    llama = llamacpp.probe()
    plan_ = machine_plan(gpus)
    bnb_section = bnb.section(gpus, torch_facts, plan_)
    sections = [
        system.section(sys_facts),
        nvidia.section(gpus),
        pytorch.section(torch_facts, gpus, plan_),
        bnb_section,
        llamacpp.section(llama, sys_facts, gpus, plan_),
        versions.section(),
    ]
    if shape is not None:
        ready = readiness(gpus, torch_facts, llama, plan_,
                          bnb_works=bool(bnb_section.facts.get("matmul_8bit")))
        sections.append(plan_section(plan(shape, n_ctx=n_ctx, batch=batch, gpus=gpus,
                                          ram_available=sys_facts.ram_available, ready=ready)))
    return Report(sections, install_plan=plan_)


def run_plan(model: str, *, n_ctx: int = 4096, batch: int = 1, use_nvml: bool = True) -> Plan:
    """Only the plan: the model's shape against this machine's free memory, and what
    the installed software can use of it."""
    return plan_shape(load_shape(model), n_ctx=n_ctx, batch=batch, use_nvml=use_nvml)


def plan_shape(shape: ModelShape, *, n_ctx: int = 4096, batch: int = 1,
               use_nvml: bool = True) -> Plan:
    """The plan of a shape already read (``models info`` reads it from a model's files)."""
    gpus = nvidia.probe(use_nvml=use_nvml)
    ready = Readiness()
    if gpus.gpus:
        ready = readiness(gpus, pytorch.probe(), llamacpp.probe(), machine_plan(gpus))
    return plan(shape, n_ctx=n_ctx, batch=batch, gpus=gpus,
                ram_available=system.memory().available, ready=ready)
