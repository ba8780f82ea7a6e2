"""Where every table of a lake lives: the one lake type below the command line.

``feedback.cli`` turns ``--lake`` into a ``LakePaths`` once; every stage receives it, so a table's
path is written in one place and no function below the command line mixes paths and lakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feedback.core.schema import TABLE_COMMENTS


@dataclass(frozen=True)
class LakePaths:
    """Where every table of a lake lives; ``root`` is the ``--lake`` directory."""

    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root.strip():
            raise ValueError(f"root must be a non-empty path string, got {self.root!r}")

    @classmethod
    def at(cls, root: str | Path) -> LakePaths:
        """Lake paths under ``root``, made absolute for local paths (Spark resolves relative paths oddly)."""
        text = str(root)
        if "://" not in text:
            text = str(Path(text).resolve())
        return cls(text)

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def tables(self) -> dict[str, str]:
        """Every Delta table of the lake: ``LakePaths`` attribute -> path (in ``TABLE_COMMENTS`` order)."""
        return {name: getattr(self, name) for name in TABLE_COMMENTS}

    def relative(self, path: str) -> str:
        """``path`` relative to the lake root, such as ``silver/turns`` (for messages)."""
        prefix = self.root.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise ValueError(f"path must lie under the lake root {self.root!r}, got {path!r}")
        return path[len(prefix) :]

    @property
    def bronze(self) -> str:
        return self._join("bronze", "interactions")

    @property
    def quarantine(self) -> str:
        return self._join("quarantine", "interactions")

    @property
    def ingest_batches(self) -> str:
        return self._join("_ops", "ingest_batches")

    @property
    def landing_skipped(self) -> str:
        return self._join("_ops", "landing_skipped")

    @property
    def validation_results(self) -> str:
        return self._join("_ops", "validation", "bronze_interactions")

    @property
    def silver_turns(self) -> str:
        return self._join("silver", "turns")

    @property
    def defect_metrics(self) -> str:
        return self._join("gold", "defect_metrics")

    @property
    def utterance_defects(self) -> str:
        return self._join("gold", "utterance_defects")

    @property
    def rephrase_pairs(self) -> str:
        return self._join("gold", "rephrase_pairs")

    @property
    def failure_points(self) -> str:
        return self._join("gold", "failure_points")

    @property
    def silver_batches(self) -> str:
        return self._join("_ops", "silver_batches")

    @property
    def silver_progress(self) -> str:
        return self._join("_ops", "silver_progress")

    @property
    def rewrites(self) -> str:
        return self._join("gold", "rewrites")

    @property
    def nlu_annotations(self) -> str:
        return self._join("gold", "nlu_annotations")

    @property
    def rewrite_vetoes(self) -> str:
        return self._join("gold", "rewrite_vetoes")

    @property
    def mlflow_db(self) -> str:
        return self._join("mlflow", "mlflow.db")

    @property
    def mlflow_artifacts(self) -> str:
        return self._join("mlflow", "artifacts")

    @property
    def training(self) -> str:
        """Simulations and their lakes made by ``feedback train-rephrase`` when no data is given."""
        return self._join("_training")

    def training_lake(self, name: str) -> LakePaths:
        """The lake ``feedback train-rephrase`` runs the pipeline into for the traffic ``name`` (under ``training``)."""
        return LakePaths(self._join("_training", name, "lake"))

    def checkpoint(self, query_name: str) -> str:
        return self._join("_checkpoints", query_name)


def require_lake(candidate: object) -> LakePaths:
    """``candidate`` if it is a ``LakePaths``: entry points check ``lake`` with it, so a path passed instead fails clearly."""
    if not isinstance(candidate, LakePaths):
        raise TypeError(f"lake must be a LakePaths (build one with LakePaths.at), got {type(candidate).__name__}")
    return candidate
