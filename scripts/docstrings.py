#!/usr/bin/env python3
"""The share of balloons' public functions, classes and methods that have a docstring.

Public: a name without a leading underscore, in a module whose path has no part with one,
at a module's top level or in a public class (nested functions are not counted, nor
``@overload`` stubs, which the implementation's docstring covers). Prints the share and the
names without one; ``--check`` exits 1 when any is missing. tests/test_docstrings.py holds
the package to it.

    .venv/bin/python scripts/docstrings.py [--check] [SRC_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _is_overload(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any(
        (isinstance(d, ast.Name) and d.id == "overload")
        or (isinstance(d, ast.Attribute) and d.attr == "overload")
        for d in decorators
    )


def public_names(src: Path) -> list[tuple[str, bool]]:
    """``(module:qualname, has a docstring)`` for every public definition under ``src``."""
    out: list[tuple[str, bool]] = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if any(p.startswith("_") and p not in ("__init__.py", "__main__.py") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def walk(body: list[ast.stmt], prefix: str, module: str = module) -> None:
            for node in body:
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    continue
                if node.name.startswith("_") or _is_overload(node):
                    continue
                out.append((f"{module}:{prefix}{node.name}", bool(ast.get_docstring(node))))
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{prefix}{node.name}.")

        walk(tree.body, "")
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    src = Path(args[0]) if args else ROOT / "src"
    names = public_names(src)
    missing = [name for name, documented in names if not documented]
    have = len(names) - len(missing)
    print(f"{have}/{len(names)} public names have a docstring ({have / len(names):.1%})")
    for name in missing:
        print(f"  missing: {name}")
    return 1 if check and missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
