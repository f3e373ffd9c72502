"""The one entry point: ``starchart serve | chat | clip | models | keys | doctor | plan | bench``.

Setting flags are generated from ``Settings``, so every setting has a flag
(``--n-ctx``), an environment variable (``STARCHART_N_CTX``) and one
documented default, in one place.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from starchart import __version__
from starchart.bench.command import add_bench_command
from starchart.doctor.command import add_commands as add_doctor_commands
from starchart.errors import StarchartError
from starchart.models.command import add_models_command
from starchart.settings import Settings
from starchart.store.commands import add_keys_command
from starchart.vision import command as clip_command

Handler = Callable[[argparse.Namespace, Settings], int]
# Settings of client commands, not of a server: `serve` and `chat` take no flag for them.
CLIENT_ONLY = ("bench_timeout",)


def _flag_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """(argparse type, choices) for a settings field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is typing.Literal:
        return type(args[0]), list(args)
    if annotation in (int, float, str, bool):
        return annotation, None
    if annotation is Path:
        return Path, None
    if origin is list:
        return list, None
    return str, None


def add_setting_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    group = parser.add_argument_group("settings (flag > STARCHART_<NAME> env var > default)")
    for name, field in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        kind, choices = _flag_type(field.annotation)
        default = ("platform data dir" if name == "home"
                   else field.get_default(call_default_factory=True))
        help_ = f"{field.description} [env STARCHART_{name.upper()}; default: {default}]"
        if kind is list:  # repeatable: --upstream a=URL --upstream b=URL
            group.add_argument(flag, dest=name, action="append", default=None, help=help_,
                               metavar=name.upper())
        elif kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_)
        else:
            group.add_argument(flag, dest=name, type=kind, choices=choices, default=None,
                               help=help_, metavar=None if choices else name.upper())


def settings_from(args: argparse.Namespace) -> Settings:
    given = {name: value for name in Settings.model_fields
             if (value := getattr(args, name, None)) is not None}
    return Settings(**given)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.server import serve

    return serve(settings)


def _chat(args: argparse.Namespace, settings: Settings) -> int:
    from starchart.chat.terminal import run_chat

    return run_chat(settings, prompt=args.prompt, conversation=args.conversation)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="starchart",
        description="Run chat LLMs and CLIP on your own machine.",
    )
    parser.add_argument("--version", action="version", version=f"starchart {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    serve = sub.add_parser(
        "serve", help="serve the OpenAI-compatible API (and the web page)",
        description="Serve the OpenAI-compatible API on http://HOST:PORT/v1 with one model.",
    )
    add_setting_flags(serve, only=[n for n in Settings.model_fields if n not in CLIENT_ONLY])
    handlers["serve"] = _serve

    chat = sub.add_parser(
        "chat", help="chat with a model in the terminal",
        description="A terminal chat that streams answers. Type /help inside for commands;"
        " Ctrl-C stops the current answer; /exit, Ctrl-D or Ctrl-C at the prompt leaves.",
    )
    chat.add_argument("-p", "--prompt", help="answer this one question and exit (for scripts:"
                      " only the answer goes to stdout)")
    chat.add_argument("--system", dest="system_prompt", help="system prompt for this chat")
    chat.add_argument("--conversation", metavar="ID", help="resume this stored conversation"
                      " (an id from /v1/conversations); new turns are stored in it")
    add_setting_flags(chat, only=[n for n in Settings.model_fields
                                  if n not in ("host", "port", "system_prompt",
                                               "max_body_bytes", "log_level",
                                               "allowed_hosts", "cors_origins",
                                               "insecure_no_auth", *CLIENT_ONLY)
                                  and not n.startswith(("clip", "upstream"))
                                  and n != "models_file"])
    handlers["chat"] = _chat

    clip = sub.add_parser(
        "clip", help="zero-shot classify images with CLIP (in this process, no server)",
        description="Score each IMAGE against the labels with a CLIP model (default"
        " openai/clip-vit-base-patch32 from the local Hugging Face cache; --clip FOLDER for"
        " another).",
    )
    clip_command.add_arguments(clip)
    add_setting_flags(clip, only=clip_command.SETTINGS)
    handlers["clip"] = clip_command.run_clip

    handlers["keys"] = add_keys_command(sub, add_setting_flags)

    handlers["models"] = add_models_command(sub, add_setting_flags)
    add_doctor_commands(sub, handlers, add_setting_flags)
    handlers["bench"] = add_bench_command(sub, add_setting_flags)
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            print(f"starchart: invalid setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    level = logging.getLevelName(settings.log_level.upper())
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if level > logging.DEBUG:
        # httpx logs each request it sends at INFO: the relay's every upstream request and
        # health probe (every 5 s, for ever), the benchmark's every request. Debug detail.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return handlers[args.command](args, settings)
    except StarchartError as exc:
        print(f"starchart: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
