"""The size limits of the source: no module over 500 lines, no function over 80 lines, and the
``App`` class (settings, the registry, pools and wiring) under 400 lines. A module or function
that outgrows them is split along what it does, not squeezed."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_MODULE = 500
MAX_FUNCTION = 80
MAX_APP = 400
APP = ("balloons/app.py", "App")


def offenders(root: Path) -> list[str]:
    """Each module, function and ``App`` class under ``root`` past its limit, named with its
    size (paths relative to ``root``)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE:
            found.append(f"{rel}: {lines} lines (a module: at most {MAX_MODULE})")
        for node in ast.walk(ast.parse(text, filename=rel)):
            size = (
                (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            )
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and size > MAX_FUNCTION:
                found.append(
                    f"{rel}:{node.lineno} {node.name}: {size} lines (a function: at most "
                    f"{MAX_FUNCTION})"
                )
            if isinstance(node, ast.ClassDef) and (rel, node.name) == APP and size >= MAX_APP:
                found.append(f"{rel}:{node.lineno} {node.name}: {size} lines (under {MAX_APP})")
    return found


def test_no_module_function_or_app_class_is_past_its_size_limit() -> None:
    assert (SRC / APP[0]).is_file()
    assert offenders(SRC) == []


def test_the_check_names_each_offender(tmp_path: Path) -> None:
    (tmp_path / "balloons").mkdir()
    body = "".join(f"    x{n} = {n}\n" for n in range(MAX_FUNCTION))  # the def line makes 81
    (tmp_path / "balloons" / "long.py").write_text(f"def long():\n{body}")
    methods = "".join(f"    def m{n}(self) -> None:\n        pass\n\n" for n in range(134))
    (tmp_path / "balloons" / "app.py").write_text(f"class App:\n{methods}")  # 402 lines
    (tmp_path / "big.py").write_text("x = 1\n" * (MAX_MODULE + 1))
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_MODULE)
    assert offenders(tmp_path) == [
        "balloons/app.py:1 App: 402 lines (under 400)",
        f"balloons/long.py:1 long: {MAX_FUNCTION + 1} lines (a function: at most {MAX_FUNCTION})",
        f"big.py: {MAX_MODULE + 1} lines (a module: at most {MAX_MODULE})",
    ]


def test_tasks_jobs_and_the_control_plane_see_the_app_through_narrow_protocols() -> None:
    """Task, Job and the supervisor's modules name what they need of an app as a protocol;
    none imports ``App`` (not even for annotations)."""
    modules = ["balloons/task.py", "balloons/job.py", *_control_modules()]
    importers = []
    for rel in modules:
        tree = ast.parse((SRC / rel).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("app", "balloons.app"):
                importers.append(f"{rel}:{node.lineno} imports {node.module}")
    assert len(modules) > 3
    assert importers == []


def _control_modules() -> list[str]:
    return [p.relative_to(SRC).as_posix() for p in sorted((SRC / "balloons/control").glob("*.py"))]
