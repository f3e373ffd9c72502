"""Every ``curl`` line of the README, run as written against a real server on loopback.

Only the address changes (the README's ``localhost:8000`` becomes the test
server's port) and the ``conv_…`` placeholder becomes the id of the
conversation an earlier line created; ``cat.jpg`` is a real JPEG in the
working directory. Each command runs in bash, as a reader would paste it, with
``--fail-with-body`` so that any HTTP error fails it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.settings import Settings

from tests.conftest import LiveServer, free_port
from tests.vision.tiny_clip import build_clip

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")
PLACEHOLDER = "conv_…"


def curl_commands(markdown: str) -> list[str]:
    """The curl commands of the bash blocks, each with its continuation lines."""
    commands: list[str] = []
    in_bash = False
    pending: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() in ("```bash", "```sh", "```shell") and not in_bash
            continue
        if not in_bash:
            continue
        if pending or line.lstrip().startswith("curl "):
            pending.append(line)
            try:
                shlex.split("\n".join(pending), comments=True)
            except ValueError:  # a quote still open: the command goes on
                continue
            commands.append("\n".join(pending))
            pending = []
    assert not pending, f"unterminated curl command in the README: {pending}"
    return commands


def test_the_parser_finds_multi_line_commands() -> None:
    found = curl_commands("```bash\ncurl a -d '{\n  \"x\": 1}'\n# not curl\ncurl b  # c\n```\n"
                          "curl outside\n")
    assert found == ["curl a -d '{\n  \"x\": 1}'", "curl b  # c"]


@pytest.fixture(scope="module")
def server(engine: LlamaCppEngine, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    clip = build_clip(tmp_path_factory.mktemp("tiny-clip"))
    settings = Settings(home=tmp_path_factory.mktemp("home"), n_ctx=2048, clip=str(clip))
    with LiveServer(create_app(settings, engines=[engine]), free_port()) as live:
        yield live


def test_every_readme_curl_line_works(server: LiveServer, tmp_path: Path) -> None:
    commands = curl_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 10  # the API, conversation and CLIP examples at least
    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "cat.jpg")
    address = server.url.removeprefix("http://")
    conversation: str | None = None
    for command in commands:
        line = ADDRESS.sub(address, command)
        if PLACEHOLDER in line:
            assert conversation, f"no earlier line created a conversation for: {command}"
            line = line.replace(PLACEHOLDER, conversation)
        line = line.replace("curl ", "curl -sS --fail-with-body --max-time 120 ", 1)
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True,
                              text=True, timeout=150)
        assert done.returncode == 0, f"{command}\n-> {done.stdout[-2000:]}{done.stderr}"
        try:
            body = json.loads(done.stdout)
        except ValueError:
            continue  # a stream or a Markdown file
        if isinstance(body, dict) and str(body.get("id", "")).startswith("conv_"):
            conversation = body["id"]
