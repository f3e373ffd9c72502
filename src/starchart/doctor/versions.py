"""Python packages: are the ones starchart needs installed, at versions it accepts?

The requirements come from starchart's own installed metadata (pyproject's
dependencies), so they are never restated here; transformers and accelerate,
which only the transformers engine needs, get a floor here unless the
metadata names them.
"""

from __future__ import annotations

import importlib.metadata
import shlex
import sys
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from starchart.doctor.report import Check, Section, fail, ok, warn

# Floors for the optional engine: chat templates in the tokenizer (4.34),
# BitsAndBytesConfig 4-bit (4.30), gpt_bigcode/StarChat (4.28); accelerate's
# device_map="auto" as transformers of that age expects it.
OPTIONAL = {
    "transformers": Requirement("transformers>=4.40"),
    "accelerate": Requirement("accelerate>=0.26"),
}


@dataclass(frozen=True)
class PackageState:
    name: str
    required: str
    installed: str | None
    optional: bool

    @property
    def satisfied(self) -> bool:
        if self.installed is None:
            return False
        return Requirement(f"{self.name}{self.required}").specifier.contains(
            self.installed, prereleases=True)


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def declared() -> list[Requirement]:
    """starchart's own requirements (without extras), from its installed metadata."""
    try:
        lines = importlib.metadata.requires("starchart") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out: list[Requirement] = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def states() -> list[PackageState]:
    found = [PackageState(r.name, str(r.specifier), _installed(r.name), False)
             for r in declared()]
    names = {s.name.lower() for s in found}
    for name, req in OPTIONAL.items():
        if name not in names:
            found.append(PackageState(name, str(req.specifier), _installed(name), True))
    return found


def judge(state: PackageState) -> Check:
    id_, title = f"package.{state.name.lower()}", state.name
    spec = f"{state.name}{state.required}"
    install = shlex.join([sys.executable, "-m", "pip", "install", spec])
    if state.installed is None:
        if state.optional:
            return warn(id_, title, f"not installed (only the transformers engine needs it;"
                        f" starchart wants {spec})", install)
        return fail(id_, title, f"not installed; starchart needs {spec}", install)
    if not state.satisfied:
        return fail(id_, title, f"{state.installed} installed; starchart needs {spec}",
                    install)
    return ok(id_, title, f"{state.installed} ({spec or 'any version'})")


def section() -> Section:
    found = states()
    out = Section("packages", {s.name: {"installed": s.installed, "required": s.required,
                                        "optional": s.optional, "ok": s.satisfied}
                               for s in found})
    checks = [judge(s) for s in found]
    # Many packages: show the ones that matter to the user (optional ones and
    # problems) as checks, the rest once as a summary.
    notable = [c for c in checks if c.status != "ok" or c.id.split(".", 1)[1] in OPTIONAL]
    fine = [c for c in checks if c not in notable]
    if fine:
        out.checks.append(ok("packages", "Python packages",
                             f"{len(fine)} required packages at accepted versions"))
    out.checks.extend(notable)
    return out
