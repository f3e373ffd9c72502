"""The package layering DESIGN.md promises, checked on the source's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import starchart

SRC = Path(starchart.__file__).parent


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import in the file."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def test_store_is_persistence_only() -> None:
    forbidden = ("starchart.services", "starchart.engines", "starchart.api",
                 "starchart.vision", "starchart.chat")
    found = [(path.name, module)
             for path in sorted((SRC / "store").glob("*.py"))
             for module, _ in imports(path)
             if module.startswith(forbidden)]
    assert found == []


def test_routes_do_not_import_each_other() -> None:
    routes = SRC / "api" / "routes"
    found = [(path.name, module, names)
             for path in sorted(routes.glob("*.py"))
             for module, names in imports(path)
             if module.startswith("starchart.api.routes")]
    assert found == []


def test_nothing_imports_private_names_across_modules() -> None:
    found = [(str(path.relative_to(SRC)), module, name)
             for path in sorted(SRC.rglob("*.py"))
             for module, names in imports(path)
             if module.startswith("starchart")
             for name in names if name.startswith("_") and not name.startswith("__")]
    assert found == []


def test_route_modules_stay_thin() -> None:
    sizes = {path.name: len(path.read_text().splitlines())
             for path in (SRC / "api" / "routes").glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 120} == {}
