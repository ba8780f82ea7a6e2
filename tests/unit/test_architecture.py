"""The layout is the architecture: each stage imports only what comes before it."""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import REPO

PACKAGE = REPO / "src" / "feedback"

# Shared foundations first, then the stages in data order; the wiring and the tools above them.
RANK = {
    "config": 0,
    "core": 0,
    "resources": 0,
    "simulate": 0,
    "bronze": 1,
    "silver": 2,
    "gold": 3,
    "rephrase": 3,
    "rewrites": 4,
    "isolation": 4,
    "pipeline": 5,
    "ops": 6,
    "cli": 7,
}
# Jobs that run the whole pipeline on simulated traffic, so they sit above the wiring.
RUNS_THE_PIPELINE = {"rephrase/train.py"}


def feedback_imports(path: Path) -> list[str]:
    """Every ``feedback.<part>`` a module imports, at module level or inside a function."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.module.split(".")[0] == "feedback":
            parts = node.module.split(".")
            found += [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [alias.name.split(".")[1] for alias in node.names if alias.name.startswith("feedback.")]
    return found


def test_every_module_belongs_to_a_known_layer() -> None:
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert sorted(tops) == sorted(RANK)


def test_no_stage_imports_a_later_one() -> None:
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        own = relative.split("/")[0].removesuffix(".py")
        if own == "__init__":
            continue
        for imported in feedback_imports(path):
            allowed = imported == "pipeline" and relative in RUNS_THE_PIPELINE
            later = RANK[imported] > RANK[own]
            sibling_stage = imported != own and RANK[imported] == RANK[own] and RANK[own] > 0
            if (later or sibling_stage) and not allowed:
                offences.append(f"{relative} imports feedback.{imported}")
    assert offences == []


def test_the_checker_sees_an_offence(tmp_path: Path) -> None:
    module = tmp_path / "stream.py"
    module.write_text("from feedback.gold.aggregate import fold_into_gold\n\ndef f():\n    import feedback.rephrase.spark\n")
    assert feedback_imports(module) == ["gold", "rephrase"]


# The command lines that turn a ``--lake`` path into ``LakePaths``: (module, function).
LAKE_CONVERTERS = {("cli.py", "main"), ("ops/notebooks.py", "main")}


def lake_type_offences(path: Path, relative: str) -> list[str]:
    """Parameters named ``lake`` not annotated ``LakePaths``, and ``LakePaths.at`` calls outside ``LAKE_CONVERTERS``."""
    offences: list[str] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                annotation = ast.unparse(argument.annotation) if argument.annotation is not None else None
                if argument.arg == "lake" and annotation != "LakePaths":
                    offences.append(f"{relative}:{node.lineno} {node.name}(lake: {annotation})")
            function = node.name
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "LakePaths.at" and (relative, function) not in LAKE_CONVERTERS:
            offences.append(f"{relative}:{node.lineno} calls LakePaths.at")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return offences


def test_below_the_command_line_a_lake_is_always_lake_paths(tmp_path: Path) -> None:
    offences = [o for p in sorted(PACKAGE.rglob("*.py")) for o in lake_type_offences(p, p.relative_to(PACKAGE).as_posix())]
    assert offences == []
    module = tmp_path / "stage.py"
    module.write_text(
        "def f(lake: str | Path) -> None: ...\n"
        "def g(lake: LakePaths) -> None:\n    return LakePaths.at(lake.root)\n"
        "def main() -> None:\n    LakePaths.at('lake')\n"
    )
    assert lake_type_offences(module, "stage.py") == [
        "stage.py:1 f(lake: str | Path)",
        "stage.py:3 calls LakePaths.at",
        "stage.py:5 calls LakePaths.at",
    ]
    assert lake_type_offences(module, "cli.py")[-1] == "cli.py:3 calls LakePaths.at"  # only main() converts
