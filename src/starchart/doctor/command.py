"""``starchart doctor`` and ``starchart plan``: the CLI side of the doctor."""

from __future__ import annotations

import argparse
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
    return 1 if report.status == "fail" else 0


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
    parser.add_argument("--n-ctx", dest="n_ctx", type=int, default=None, metavar="N",
                        help="context length the plan reserves KV cache for"
                             " [env STARCHART_N_CTX; default: 4096]")
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
