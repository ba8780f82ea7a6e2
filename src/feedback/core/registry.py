"""MLflow tracking and model registry: where they live and when the ``champion`` alias moves.

Both models of this project (``rephrase-detector``, ``query-rewriter``) are registered with
aliases, never stages. A new version becomes ``champion`` only when its score on the
evaluation set clears the current champion's and, where the caller names one, a floor that no
champion may sit at or below (for the rewriter: the identity, which rewrites nothing); the
decision and the scores are logged to the run and tagged on the version (``champion_refused``
says why a version was passed over), so the registry itself explains why an alias moved or not.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from feedback.core.lake import LakePaths

LOG = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
REPHRASE_DETECTOR = "rephrase-detector"
QUERY_REWRITER = "query-rewriter"
FAILURE_POINT_CLASSIFIER = "failure-point-classifier"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def tracking_uri_for(lake: LakePaths) -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else SQLite at ``LAKE/mlflow/mlflow.db``."""
    override = os.environ.get(TRACKING_URI_ENV, "").strip()
    if override:
        return override
    if "://" in lake.root and not lake.root.startswith("file://"):
        raise ValueError(f"lake must be a local path for the default SQLite tracking store, got {lake.root!r}; set {TRACKING_URI_ENV}")
    return f"sqlite:///{lake.mlflow_db.removeprefix('file://')}"


def configure_mlflow(lake: LakePaths) -> str:
    """Point MLflow's tracking and registry at the lake's store (creating its folders); returns the URI."""
    uri = tracking_uri_for(lake)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    Path(lake.mlflow_artifacts.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    user_override = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that, or the next lake opened in this
    # process would be sent to this lake's store.
    if user_override is None:
        os.environ.pop(TRACKING_URI_ENV, None)
    else:
        os.environ[TRACKING_URI_ENV] = user_override
    return uri


def ensure_experiment(lake: LakePaths, name: str) -> str:
    """The experiment ``name`` (created with its artifacts under ``LAKE/mlflow/artifacts``); returns its id.

    Call after ``configure_mlflow``. With ``$MLFLOW_TRACKING_URI`` set, artifacts go where that
    server puts them.
    """
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        mlflow.set_experiment(experiment_id=existing.experiment_id)
        return str(existing.experiment_id)
    location = None
    if not os.environ.get(TRACKING_URI_ENV, "").strip():
        location = Path(lake.mlflow_artifacts.removeprefix("file://")).joinpath(name).as_uri()
    experiment_id = client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def champion_version(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version behind ``model_name@champion``, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException:
        return None


def champion_uri(model_name: str) -> str:
    """``models:/NAME@champion``."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


def beats_champion(candidate_score: float, champion_score: float | None, *, allow_equal: bool) -> bool:
    """Whether a candidate with ``candidate_score`` should take the alias (higher is better).

    No champion yet: the candidate wins. ``allow_equal``: "no worse" is enough (the rewriter's
    rule); otherwise it must be strictly better (the detector's rule).
    """
    if not isinstance(candidate_score, (int, float)):
        raise TypeError(f"candidate_score must be a number, got {type(candidate_score).__name__}")
    if champion_score is None:
        return True
    return candidate_score >= champion_score if allow_equal else candidate_score > champion_score


@dataclass(frozen=True)
class ChampionDecision:
    """What the champion rule decided for one new version, and on which scores."""

    model_name: str
    metric: str
    candidate_version: str
    candidate_score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    baseline: str | None = None
    baseline_score: float | None = None
    floor: str | None = None
    floor_score: float | None = None
    refused: str | None = None
    """Why the version was not promoted (None when it was): what is tagged as ``champion_refused``."""

    def describe(self) -> str:
        """One line for logs and run summaries: the scores compared and the verdict, with the reason when refused."""
        if self.champion_version is not None and self.champion_score is not None:
            previous = f"champion v{self.champion_version} {self.metric}={self.champion_score:.4f}"
        elif self.baseline is not None and self.baseline_score is not None:
            previous = f"no champion yet, baseline {self.baseline} {self.metric}={self.baseline_score:.4f}"
        else:
            previous = "no champion yet"
        verdict = "promoted to champion" if self.promoted else f"kept as challenger, champion refused: {self.refused}"
        return f"{self.model_name} v{self.candidate_version} {self.metric}={self.candidate_score:.4f} vs {previous}: {verdict}"


def _refusal(
    metric: str,
    candidate_score: float,
    versus: str,
    versus_score: float,
    allow_equal: bool,
) -> str:
    """The ``champion_refused`` reason: the candidate's score against what it failed to beat."""
    relation = "is below" if allow_equal else "does not beat"
    return f"{metric}={candidate_score:.6f} {relation} {versus} ({versus_score:.6f})"


def apply_champion_rule(
    client: MlflowClient,
    model_name: str,
    candidate_version: str,
    metric: str,
    candidate_score: float,
    champion_score: float | None,
    *,
    allow_equal: bool,
    baseline: tuple[str, float] | None = None,
    floor: tuple[str, float] | None = None,
) -> ChampionDecision:
    """Move ``champion`` to ``candidate_version`` when it beats the current champion's score.

    ``champion_score`` must be the current champion measured on the same evaluation set as the
    candidate (None when there is no champion). ``baseline``: (name, score) of what runs when
    there is no champion (the heuristic detector); the first version must beat it too.
    ``floor``: (name, score) that every version, the first and any later one, must beat strictly,
    whatever ``allow_equal`` says: "no worse than the champion" must not let a version that does
    no better than the floor serve (the champion may score at or below it on a new evaluation
    set). The decision is tagged on the new version (with ``champion_refused``, the reason, when
    it is not promoted) and, when a run is active, logged to it (metrics and
    ``champion_decision.json``).
    """
    if floor is not None and (
        not isinstance(floor, tuple) or len(floor) != 2 or not isinstance(floor[1], (int, float))
    ):
        raise TypeError(f"floor must be a (name, score) tuple, got {floor!r}")
    current = champion_version(client, model_name)
    if current is not None and champion_score is None:
        raise ValueError(f"champion_score is required: {model_name} already has champion v{current.version}")
    refused: str | None = None
    if floor is not None and not beats_champion(candidate_score, floor[1], allow_equal=False):
        refused = _refusal(metric, candidate_score, floor[0], floor[1], allow_equal=False)
    elif current is not None and champion_score is not None:
        if not beats_champion(candidate_score, champion_score, allow_equal=allow_equal):
            refused = _refusal(metric, candidate_score, f"champion v{current.version}", champion_score, allow_equal)
    elif baseline is not None and not beats_champion(candidate_score, baseline[1], allow_equal=allow_equal):
        refused = _refusal(metric, candidate_score, f"baseline {baseline[0]}", baseline[1], allow_equal)
    promoted = refused is None
    decision = ChampionDecision(
        model_name=model_name,
        metric=metric,
        candidate_version=str(candidate_version),
        candidate_score=float(candidate_score),
        champion_version=None if current is None else str(current.version),
        champion_score=None if current is None or champion_score is None else float(champion_score),
        promoted=promoted,
        baseline=None if current is not None or baseline is None else baseline[0],
        baseline_score=None if current is not None or baseline is None else float(baseline[1]),
        floor=None if floor is None else str(floor[0]),
        floor_score=None if floor is None else float(floor[1]),
        refused=refused,
    )
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(candidate_version))
    tags = {
        "champion_decision": "promoted" if promoted else "rejected",
        f"eval_{metric}": f"{candidate_score:.6f}",
        "compared_with_version": decision.champion_version or decision.baseline or "none",
        f"compared_with_{metric}": (
            f"{decision.champion_score:.6f}"
            if decision.champion_score is not None
            else "none" if decision.baseline_score is None else f"{decision.baseline_score:.6f}"
        ),
    }
    if refused is not None:
        tags["champion_refused"] = refused
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(candidate_version), key, value)
    if mlflow.active_run() is not None:
        metrics = {f"candidate_{metric}": decision.candidate_score, "promoted": float(promoted)}
        if decision.champion_score is not None:
            metrics[f"champion_{metric}"] = decision.champion_score
        if decision.baseline_score is not None:
            metrics[f"baseline_{metric}"] = decision.baseline_score
        if decision.floor_score is not None:
            metrics[f"floor_{metric}"] = decision.floor_score
        mlflow.log_metrics(metrics)
        mlflow.log_dict(asdict(decision), "champion_decision.json")
        if refused is not None:
            mlflow.set_tag("champion_refused", refused)
    LOG.log(logging.WARNING if refused is not None else logging.INFO, "%s", decision.describe())
    return decision


def registry_exists(lake: LakePaths) -> bool:
    """True when a tracking store could hold a champion (no SQLite file: nothing to ask MLflow)."""
    if os.environ.get(TRACKING_URI_ENV, "").strip():
        return True
    return Path(lake.mlflow_db).is_file()


def champion_artifact_dir(lake: LakePaths, model_name: str, artifact: str, marker: str) -> tuple[str, Path] | None:
    """(version, local folder) of the ``artifact`` folder of ``model_name@champion``, downloaded once
    into ``LAKE/_models/NAME/VERSION``; None without a registry or a champion.

    ``marker`` is a file the artifact folder must hold (a partial download is fetched again).
    """
    if not registry_exists(lake):
        return None
    configure_mlflow(lake)
    version = champion_version(MlflowClient(), model_name)
    if version is None:
        return None
    target = Path(lake.root) / "_models" / model_name / str(version.version)
    folder = target / "artifacts" / artifact
    if not (folder / marker).is_file():
        staging = target.with_name(f".{target.name}.download")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version.version}", dst_path=str(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    if not (folder / marker).is_file():
        raise FileNotFoundError(f"{model_name} v{version.version} has no {artifact} artifact under {target}")
    return str(version.version), folder
