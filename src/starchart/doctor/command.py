"""``starchart doctor`` and ``starchart plan``: the CLI side of the doctor."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from starchart.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.doctor import upstreams
    from starchart.doctor.render import to_json, to_text
    from starchart.doctor.run import run_checks
    from starchart.engines.upstreams import upstream_models

    report = run_checks(settings.home, model=args.model, n_ctx=settings.n_ctx, batch=args.batch)
    remote = upstream_models(settings)
    if remote:
        report.sections.append(upstreams.section(remote, settings.upstream_connect_timeout))
    if args.json:
        print(to_json(report))
    else:
        print(to_text(report), end="")
    if args.fix:
        report = _fix(args, settings, report) or report
    return 1 if report.status == "fail" else 0


def _fix(args: argparse.Namespace, settings: Settings, report: Any) -> Any:
    """Apply the install plan's steps for what failed, then check again (the new report)."""
    from starchart.doctor import fix
    from starchart.doctor.render import to_text
    from starchart.doctor.run import run_checks

    steps = fix.needed(report)
    if not steps:
        print("\ndoctor --fix: nothing the install plan can fix"
              + (" (see the fix lines above)." if report.status != "ok" else "."))
        return None
    print(f"\ndoctor --fix: {len(steps)} command(s) for {sys.executable}:")
    for step in steps:
        print(f"  {step.shell()}")
    if not args.yes and not fix.confirm("Run them?"):
        print("nothing run.")
        return None
    if not fix.apply(steps):
        return None
    print("\nchecking again ...\n")
    again = run_checks(settings.home, model=args.model, n_ctx=settings.n_ctx, batch=args.batch)
    print(to_text(again), end="")
    return again


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.doctor.render import to_json, to_text
    from starchart.doctor.report import Report
    from starchart.doctor.run import plan_section, run_plan

    result = run_plan(args.model, n_ctx=settings.n_ctx, batch=args.batch)
    report = Report([plan_section(result)])
    if args.json:
        print(to_json(report))
    else:
        print(to_text(report, heading="starchart plan"), end="")
    return 0 if result.best is not None else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    n_ctx = Settings.model_fields["n_ctx"]
    parser.add_argument("--n-ctx", dest="n_ctx", type=int, default=None, metavar="N",
                        help=f"{n_ctx.description} The plan reserves KV cache for it."
                             f" [env STARCHART_N_CTX; default: {n_ctx.default}]")
    parser.add_argument("--batch", type=_positive, default=1, metavar="N",
                        help="sequences generated at once (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def add_commands(sub: Any, handlers: dict[str, Handler],
                 add_setting_flags: Callable[..., None]) -> None:
    doctor = sub.add_parser(
        "doctor", help="check this machine: GPU, CUDA, PyTorch, bitsandbytes, llama.cpp",
        description="Check the machine for running models: system, NVIDIA driver and GPUs,"
        " PyTorch and its CUDA build (with the exact pip line to install), bitsandbytes,"
        " llama.cpp, package versions. Each check is ok / warn / fail with a one-line fix."
        " With --model, also plan the model's memory. Exit code 1 when a check fails.")
    doctor.add_argument("--model", metavar="M", help="also plan this model's memory (a"
                        " registry name, a .gguf, or a checkpoint folder with config.json)")
    doctor.add_argument("--fix", action="store_true",
                        help="after the checks, show the pinned install commands for what is"
                        " missing or broken (torch, bitsandbytes, llama.cpp), ask, run them"
                        " with this environment's python -m pip, and check again")
    doctor.add_argument("--yes", action="store_true", help="with --fix: do not ask")
    _common(doctor)
    add_setting_flags(doctor, only=["home", "upstream", "upstream_key", "upstream_model",
                                    "models_file", "upstream_connect_timeout"])
    handlers["doctor"] = _doctor

    plan = sub.add_parser(
        "plan", help="will a model fit here? memory per precision and the serve flags",
        description="Read a model's shape without loading it (GGUF metadata, or config.json"
        " and safetensors headers) and tabulate the memory it needs at fp32, fp16/bf16, int8,"
        " int4 (and a GGUF's own quantization): weights, KV cache for --n-ctx x --batch,"
        " overhead; then say which fit the free GPU memory (or RAM) and print the"
        " `starchart serve` line for the best. Exit code 1 when nothing fits.")
    plan.add_argument("model", metavar="M", help="a registry name, a .gguf file, or a"
                      " checkpoint folder with config.json")
    _common(plan)
    handlers["plan"] = _plan
