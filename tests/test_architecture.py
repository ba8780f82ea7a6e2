"""The layout is the architecture: each stage imports only what comes before it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "feedback"

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
