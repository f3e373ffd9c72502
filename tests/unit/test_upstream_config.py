"""Which models come from upstreams: --upstream flags and models.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchart.cli import build_parser, settings_from
from starchart.engines.upstreams import UpstreamModel, upstream_models
from starchart.errors import BadRequest
from starchart.settings import Settings


def test_flags_name_models_their_urls_upstream_names_and_key(tmp_path: Path) -> None:
    parser, _ = build_parser()
    args = parser.parse_args([
        "serve", "--upstream", "big=http://gpu1:8001/v1, http://gpu2:8001/",
        "--upstream", "azure=https://gw/llm/v1/?api-version=2024-06-01",
        "--upstream", "small=http://127.0.0.1:9000", "--upstream-model",
        "big=meta-llama/Llama-3.1-70B-Instruct", "--upstream-key", "secret",
        "--home", str(tmp_path)])
    assert upstream_models(settings_from(args)) == [
        UpstreamModel("big", ("http://gpu1:8001", "http://gpu2:8001"),
                      "meta-llama/Llama-3.1-70B-Instruct", "secret"),
        UpstreamModel("azure", ("https://gw/llm?api-version=2024-06-01",), "azure", "secret"),
        UpstreamModel("small", ("http://127.0.0.1:9000",), "small", "secret"),
    ]


def test_a_models_file_names_many_models(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.a]\nurls = ["http://h1:1", "http://h2:2"]\n'
                      'upstream_model = "org/a"\napi_key = "ka"\n'
                      '[models.b]\nurls = ["https://h3"]\n')
    got = upstream_models(Settings(home=tmp_path, models_file=models, upstream_key="k"))
    assert got == [UpstreamModel("a", ("http://h1:1", "http://h2:2"), "org/a", "ka"),
                   UpstreamModel("b", ("https://h3",), "b", "k")]


@pytest.mark.parametrize(("changes", "wrong"), [
    ({"upstream": ["noequals"]}, "NAME=VALUE"),
    ({"upstream": ["a=ftp://x"]}, "http(s) base URL"),
    ({"upstream": ["a=http://x", "a=http://y"]}, "named twice"),
    ({"upstream": ["a=http://x"], "upstream_model": ["b=m"]}, "no --upstream serves"),
    # it would end the request's header line: the rest would be a header of its own
    ({"upstream": ["a=http://x"], "upstream_key": "sk-1\r\nX-Injected: yes"}, "one line"),
])
def test_mistakes_are_named(tmp_path: Path, changes: dict, wrong: str) -> None:
    with pytest.raises(BadRequest) as exc:
        upstream_models(Settings(home=tmp_path, **changes))
    assert wrong in exc.value.message


def test_a_broken_models_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text("[models.a]\nurl = 'http://x'\n")
    with pytest.raises(BadRequest, match=r"needs urls"):
        upstream_models(Settings(home=tmp_path, models_file=bad))
    bad.write_text("[models.a]\nurls = ['http://x']\napi_key = 12\n")
    with pytest.raises(BadRequest, match=r"\[models.a\]: the API key must be text"):
        upstream_models(Settings(home=tmp_path, models_file=bad))
    with pytest.raises(BadRequest, match="cannot read"):
        upstream_models(Settings(home=tmp_path, models_file=tmp_path / "missing.toml"))
