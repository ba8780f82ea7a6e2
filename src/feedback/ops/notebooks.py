"""The analyst notebooks run against a lake, and their executed copies rendered to HTML.

``make notebooks-html`` renders each notebook of ``notebooks/``, run top to bottom on a lake
(``make demo``'s by default), to ``docs/notebooks/NAME.html`` with its tables and plots, so a
reader sees them without running Spark. The lake and the ``--conf`` YAML are injected after the
cell tagged ``parameters`` (papermill's convention), and the kernel is this venv's interpreter.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from feedback.core.lake import LakePaths

NOTEBOOK_NAMES = ("defect_overview", "rewrite_review", "model_monitoring")
KERNEL = "feedback-venv"


def parameter_names(source: str) -> list[str]:
    """The names a parameters cell assigns, in order."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
    return names


def inject_parameters(notebook: Any, parameters: Mapping[str, object]) -> None:
    """Insert an ``injected-parameters`` cell after the ``parameters`` cell.

    Raises:
        ValueError: no cell is tagged ``parameters``, or a name is not one of its parameters.
    """
    import nbformat

    index = next((i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])), None)
    if index is None:
        raise ValueError("notebook: no cell tagged 'parameters'")
    unknown = set(parameters) - set(parameter_names(notebook.cells[index].source))
    if unknown:
        raise ValueError(f"parameters: {sorted(unknown)} are not defined in the parameters cell")
    cell = nbformat.v4.new_code_cell("\n".join(f"{key} = {value!r}" for key, value in parameters.items()), id="injected-parameters")
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, cell)


@contextmanager
def venv_kernel(workdir: Path) -> Iterator[str]:
    """A Jupyter kernel spec for this interpreter under ``workdir`` (on ``JUPYTER_PATH`` inside the
    block), so no other Python's ``python3`` kernel runs the notebooks; yields its name."""
    kernels = workdir / "jupyter" / "kernels" / KERNEL
    kernels.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": KERNEL, "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps(spec))
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(workdir / "jupyter")
    try:
        yield KERNEL
    finally:
        if before is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = before


def execute_notebook(path: Path, parameters: Mapping[str, object], workdir: Path, kernel_name: str, timeout_s: int = 600) -> Any:
    """Run the notebook at ``path`` top to bottom in a fresh kernel with ``parameters`` injected;
    the executed copy is written to ``workdir/NAME.executed.ipynb`` (also when a cell fails)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    inject_parameters(notebook, parameters)
    client = NotebookClient(notebook, kernel_name=kernel_name, timeout=timeout_s, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    finally:
        nbformat.write(notebook, workdir / f"{path.stem}.executed.ipynb")
    return notebook


def to_html(notebook: Any) -> str:
    """One self-contained HTML page of an executed notebook: code, tables, plots inlined as PNG."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="classic").from_notebook_node(notebook)
    return str(body)


def render(
    notebooks: Path,
    lake: LakePaths,
    conf: Path | None,
    out: Path,
    names: tuple[str, ...] = NOTEBOOK_NAMES,
    lake_name: str | None = None,
) -> list[Path]:
    """Execute each named notebook of ``notebooks`` on ``lake`` and write ``out/NAME.html``.

    ``lake_name`` is how messages and pages name the lake (such as the ``--lake`` given; default: its root).
    """
    shown = lake.root if lake_name is None else lake_name
    if not (Path(lake.root) / "silver").is_dir():
        raise ValueError(f"lake: {shown} has no silver tables (run `make demo` or `feedback pipeline` first)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    parameters: dict[str, object] = {"lake": lake.root}
    if conf is not None:
        parameters["conf"] = str(conf.resolve())
    with tempfile.TemporaryDirectory(prefix="notebooks-") as scratch, venv_kernel(Path(scratch)) as kernel:
        for name in names:
            print(f"running notebooks/{name}.ipynb on {shown}", flush=True)
            executed = execute_notebook(notebooks / f"{name}.ipynb", parameters, Path(scratch), kernel)
            target = out / f"{name}.html"
            # The page names the lake as it was given, not this machine's absolute path.
            target.write_text(to_html(executed).replace(lake.root, shown), encoding="utf-8")
            written.append(target)
            print(f"wrote {target}", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the analyst notebooks on a lake and render them to HTML.")
    parser.add_argument("--lake", type=Path, default=Path("demo/lake"), help="the lake the notebooks read (default: make demo's)")
    parser.add_argument("--conf", type=Path, default=None, help="YAML applied over conf/default.yaml in the notebooks")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--out", type=Path, default=Path("docs/notebooks"))
    args = parser.parse_args(argv)
    render(args.notebooks, LakePaths.at(args.lake), args.conf, args.out, lake_name=str(args.lake))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
