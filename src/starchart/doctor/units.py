"""Memory sizes as the doctor shows them: decimal gigabytes (what GPU and disk specs
print), two decimals below 10 GB and one above."""

from __future__ import annotations

GB = 1000**3


def gb(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / GB:.2f} GB" if n < 10 * GB else f"{n / GB:.1f} GB"
