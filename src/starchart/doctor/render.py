"""The report as text (a terminal table) or as JSON (``--json``, ``GET /v1/doctor``)."""

from __future__ import annotations

import json
from typing import Any

from starchart.doctor.report import Report
from starchart.doctor.units import gb

TITLES = {"system": "System", "nvidia": "NVIDIA", "torch": "PyTorch",
          "bitsandbytes": "bitsandbytes", "llamacpp": "llama.cpp",
          "packages": "Python packages", "plan": "Memory plan", "upstreams": "Upstreams"}


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str)


def plan_table(plan: dict[str, Any]) -> list[str]:
    model = plan["model"]
    budget = plan["budget"]
    params = model["n_params"]
    size = f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"
    how = ("estimated from config.json" if model["source"] == "config"
           else f"counted from {model['source']}")
    lines = [
        f"  {model['name']}: {model['architecture']}, {size} parameters ({how}),"
        f" {model['n_layers']} layers, {model['n_kv_heads']} KV heads x {model['head_dim']}",
        f"  context {plan['n_ctx']} tokens, batch {plan['batch']};"
        f" against {budget['what']}: {gb(budget['free'])} free",
        "",
        f"  {'option':<12}{'weights':>10}{'KV cache':>10}{'overhead':>10}{'total':>10}  fits",
    ]
    for option in plan["options"]:
        if not option["runnable"]:
            fits = f"-  ({option['note']})"
        else:
            fits = "yes" if option["fits"] else "no"
        if option["name"] == plan["best"]:
            fits += "   <- best"
        lines.append(f"  {option['name']:<12}{gb(option['weights']):>10}"
                     f"{gb(option['kv_cache']):>10}{gb(option['overhead']):>10}"
                     f"{gb(option['total']):>10}  {fits}")
    if plan["command"]:
        lines += ["", f"  run: {plan['command']}"]
    return lines


def to_text(report: Report, heading: str = "starchart doctor") -> str:
    out = [f"{heading}: {report.status.upper()}"]
    width = max((len(c.title) for c in report.checks), default=10)
    for section in report.sections:
        out += ["", TITLES.get(section.name, section.name)]
        for check in section.checks:
            out.append(f"  {check.status:<5} {check.title:<{width}}  {check.detail}")
            if check.fix:
                out.append(f"  {'':<5} {'':<{width}}  fix: {check.fix}")
        if section.name == "plan":
            out += ["", *plan_table(section.facts)]
    problems = [c for c in report.checks if c.status != "ok"]
    out.append("")
    out.append(f"{len(problems)} to look at." if problems else "Everything looks fine.")
    return "\n".join(out) + "\n"
