"""No module of the package reaches into another module's private names (issue 22's seams)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "aerobust"
OWN = ("self", "cls")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[str]:
    """``from .x import _name`` and ``obj._name`` on anything but self/cls, as "line: text"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
                      for alias in node.names if _private(alias.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in OWN) and not isinstance(base, ast.Call):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_sees_private_imports_and_attributes():
    source = "from .audit import _Plan\nfrom .x import public\naudit._run_block(1)\nself._own()\nx.__len__()\n"
    assert private_uses(source) == ["1: from .audit import _Plan", "3: audit._run_block"]


def test_no_module_uses_another_modules_private_names():
    offences = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        uses = private_uses(path.read_text())
        if uses:
            offences[str(path.relative_to(PACKAGE))] = uses
    assert offences == {}
