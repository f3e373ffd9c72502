"""What the doctor found: checks (ok / warn / fail, with a one-line fix) and facts.

A ``Section`` is what one module of the doctor returns: the facts it read
(for ``--json`` and the API) and the checks it judged from them. The
``Report`` is every section (with ``--model``, the memory plan is one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "fail": 2}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default="ok")


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status,
                "detail": self.detail, "fix": self.fix}


def ok(id: str, title: str, detail: str) -> Check:
    return Check(id, title, "ok", detail)


def warn(id: str, title: str, detail: str, fix: str) -> Check:
    return Check(id, title, "warn", detail, fix)


def fail(id: str, title: str, detail: str, fix: str) -> Check:
    return Check(id, title, "fail", detail, fix)


@dataclass
class Section:
    name: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


@dataclass
class Report:
    sections: list[Section]
    # The install plan the fix lines came from (``install_plan.InstallPlan``), for
    # ``doctor --fix``; not part of the JSON.
    install_plan: Any = None

    @property
    def checks(self) -> list[Check]:
        return [check for section in self.sections for check in section.checks]

    @property
    def status(self) -> Status:
        return worst([check.status for check in self.checks])

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "checks": [check.as_dict() for check in self.checks],
        }
        for section in self.sections:
            out[section.name] = section.facts
        return out
