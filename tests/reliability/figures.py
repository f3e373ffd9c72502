"""The measured figure of each reliability guarantee, printed with the test results.

Each test calls ``report(guarantee, figure)``; the figures are printed as the
test runs (``-s``) and again in a "reliability figures" section at the end of
the session, so `make test` output carries them (README "Reliability").
"""

from __future__ import annotations

FIGURES: list[tuple[str, str]] = []


def record(guarantee: str, figure: str) -> None:
    FIGURES.append((guarantee, figure))
    print(f"\n[reliability] {guarantee}: {figure}", flush=True)
