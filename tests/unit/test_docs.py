"""The README stays true: every setting is documented with its flag and env var."""

from pathlib import Path

from starchart.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        assert f"`--{name.replace('_', '-')}`" in README, name
        assert f"`STARCHART_{name.upper()}`" in README, name


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1].strip().splitlines()
    assert first_block == ["make run", "make test"]
