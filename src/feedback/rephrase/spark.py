"""The rephrase detector inside Spark: candidate pairs -> cascade -> request groups -> mapInPandas -> pair scores.

Only candidate pairs reach this stage (``detect.rephrase_candidates``). A cheap first stage (the
heuristic's score, ``cascade_min_score``) settles the pairs that are clearly not a rephrase; the
rest are grouped into one sequence per request. ``mapInPandas`` loads the detector once per Python
worker (a module-level cache that survives across tasks, since Spark reuses workers), on the
configured device, sets torch's threads to the task's cores, sorts each Arrow batch by length and
pads per batch. A request group the model fails on is scored by the heuristic instead
(``scoring = fallback``). ``resolve_scorer`` picks the scorer for a run:
``models:/rephrase-detector@champion`` when the lake's registry has one, else the heuristic with a
warning; the silver rows record which (``rephrase_detector`` = ``rephrase-detector/<version>``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from feedback.config import AppConfig, DetectConfig, RephraseModelConfig
from feedback.core.lake import LakePaths
from feedback.rephrase.evidence import word_counts
from feedback.rephrase.model import (
    CASCADE_SCOPES,
    GROUP_COLUMNS,
    SpanRephraseDetector,
    queries_from_pandas,
    resolve_device,
    score_isolating_failures,
)
from feedback.silver.detect import (
    HEURISTIC_DETECTOR,
    SCORING_CASCADE,
    SCORING_FALLBACK,
    SCORING_MODEL,
    PairScorer,
    score_pairs_heuristic,
)

LOG = logging.getLogger(__name__)

SCORES_SCHEMA = StructType(
    [
        StructField("source_event_id", StringType(), False),
        StructField("target_event_id", StringType(), False),
        StructField("rephrase_score", DoubleType(), True),
        StructField("model_error", StringType(), True),
    ]
)
"""What the model returns per pair: a null score and the error's text where it failed on the group."""

"""``scoring`` of a pair: scored by the model, settled by the cascade's first stage, or scored by
the heuristic because the model failed on its request group."""

_DETECTORS: dict[tuple[str, bool, int, str], SpanRephraseDetector] = {}
"""Per Python worker: detectors already loaded, by (folder, quantized, fp32 FFN output layers, device)."""


@dataclass(frozen=True)
class DetectorHandle:
    """Where a saved detector is and how to run it; small and picklable, shipped to the workers.

    ``device`` is resolved on the worker (``auto``: CUDA when that worker's torch sees it), and
    the batch size and threads follow it: ``gpu_batch_size`` sequences and one CPU thread on a
    GPU, ``batch_size`` and ``threads`` (0: the task's cores) on the CPU. ``quantize`` (int8,
    ``fp32_ffn_output_layers`` as in ``SpanRephraseDetector.quantize``) applies where it runs on
    the CPU; a GPU runs the float model.
    """

    path: str
    label: str
    quantize: bool = False
    fp32_ffn_output_layers: int = 0
    batch_size: int = 64
    threads: int = 0
    device: str = "cpu"
    gpu_batch_size: int = 256
    cascade_min_score: float = 0.0
    cascade_scope: str = "pair"

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path must be non-empty")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.gpu_batch_size < 1:
            raise ValueError(f"gpu_batch_size must be >= 1, got {self.gpu_batch_size}")
        if self.fp32_ffn_output_layers < 0:
            raise ValueError(f"fp32_ffn_output_layers must be >= 0, got {self.fp32_ffn_output_layers}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.0 <= self.cascade_min_score <= 1.0:
            raise ValueError(f"cascade_min_score must be in [0, 1], got {self.cascade_min_score}")
        if self.cascade_scope not in CASCADE_SCOPES:
            raise ValueError(f"cascade_scope must be one of {CASCADE_SCOPES}, got {self.cascade_scope!r}")


def load_detector(handle: DetectorHandle) -> SpanRephraseDetector:
    """The detector of ``handle``, loaded once per process (int8 only where it runs on the CPU)."""
    device = resolve_device(handle.device)
    quantize = handle.quantize and device == "cpu"
    key = (handle.path, quantize, handle.fp32_ffn_output_layers if quantize else 0, device)
    if key not in _DETECTORS:
        path = handle.path
        if not os.path.isabs(path):
            from pyspark import SparkFiles

            path = SparkFiles.get(path)  # shipped with SparkContext.addArchive on a cluster, unpacked there
        _DETECTORS[key] = SpanRephraseDetector.load(
            path, quantize=quantize, device=device, fp32_ffn_output_layers=handle.fp32_ffn_output_layers
        )
    return _DETECTORS[key]


def request_groups(pairs: DataFrame) -> DataFrame:
    """One row per source request (``GROUP_COLUMNS``), its candidates ordered by distance."""
    candidate = F.struct(
        F.col("steps_back"),
        F.col("target_event_id"),
        F.col("target_text"),
        F.col("gap_s"),
        F.col("stop_between"),
    )
    context = [c for c in GROUP_COLUMNS if c not in ("source_event_id", "candidates")]
    grouped = pairs.groupBy("source_event_id").agg(
        *[F.first(c).alias(c) for c in context], F.array_sort(F.collect_list(candidate)).alias("_candidates")
    )
    return grouped.select(
        *GROUP_COLUMNS[:-1],
        F.transform(
            "_candidates",
            lambda c: F.struct(
                c["target_event_id"].alias("target_event_id"),
                c["target_text"].alias("target_text"),
                c["gap_s"].alias("gap_s"),
                c["stop_between"].alias("stop_between"),
            ),
        ).alias("candidates"),
    )


def traffic_word_counts(pairs: DataFrame) -> dict[str, int]:
    """``word_counts`` of the distinct request texts of ``pairs`` (sources and targets).

    Counted on the driver from the distinct texts (a micro-batch has thousands), so every task
    ranks words the same way, however the groups are partitioned.
    """
    texts = pairs.select(F.col("source_text").alias("text")).union(pairs.select(F.col("target_text").alias("text")))
    return word_counts(row["text"] for row in texts.distinct().collect() if row["text"] is not None)


def _partition_scorer(handle: DetectorHandle, traffic_counts: dict[str, int]):  # type: ignore[no-untyped-def]
    """The ``mapInPandas`` function: closes over ``handle`` and the batch's word counts (the model loads on the worker)."""

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch
        from pyspark import TaskContext

        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        detector = load_detector(handle)
        on_gpu = detector.device == "cuda"
        context = TaskContext.get()
        threads = 1 if on_gpu else handle.threads or (context.cpus() if context is not None else 1)
        torch.set_num_threads(max(1, threads))
        batch_size = handle.gpu_batch_size if on_gpu else handle.batch_size
        for groups in batches:
            yield score_isolating_failures(detector, queries_from_pandas(groups), batch_size, traffic_counts)

    return score_batches


def cascade_passes(heuristic_score: Column, min_score: float, scope: str = "pair") -> Column:
    """True for the pairs the model must score: the first stage's (the heuristic's) score reaches
    ``min_score``. Below it a pair is settled as no rephrase (score 0) without the model; 0 passes all.
    With ``scope`` ``request`` a request's candidates pass together, when any of them reaches it
    (a window over ``source_event_id``: use it in a column, then filter).

    Why: most candidate pairs are a request and an unrelated next request; the heuristic tells those
    apart for a fraction of the model's cost (``docs/quality.md`` reports the share it settles and
    what that costs in link F1). Passing whole requests suits a model trained on whole requests.
    """
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if scope not in CASCADE_SCOPES:
        raise ValueError(f"scope must be one of {CASCADE_SCOPES}, got {scope!r}")
    if scope == "pair":
        return heuristic_score >= F.lit(min_score)
    return F.max(heuristic_score).over(Window.partitionBy("source_event_id")) >= F.lit(min_score)


def score_pairs_with_detector(pairs: DataFrame, handle: DetectorHandle, detect: DetectConfig | None = None) -> DataFrame:
    """Add ``rephrase_score``, ``rephrase_detector``, ``scoring`` (``SCORING_KINDS``) and ``model_error`` to candidate pairs.

    The cascade settles pairs whose heuristic score is below ``handle.cascade_min_score``; the
    request groups of the rest are dealt round-robin over one partition per core before the model
    runs: left to adaptive execution, the small shuffle of the grouping is coalesced into a single
    partition, and one task would score everything on one core. (A hash repartition by source
    would not do: the grouping already satisfies it, so the planner drops it.) The word counts
    of the whole batch go to every task (``traffic_word_counts``). Pairs of a group the model
    failed on keep the heuristic's score and label.

    Callers that use the result more than once should materialise it (``checkpointed``): each
    use would run the model again.
    """
    rules = detect or DetectConfig()
    cores = pairs.sparkSession.sparkContext.defaultParallelism
    with_heuristic = score_pairs_heuristic(pairs, rules).withColumnRenamed("rephrase_score", "_heuristic_score").drop(
        "rephrase_detector"
    )
    passes = cascade_passes(F.col("_heuristic_score"), handle.cascade_min_score, handle.cascade_scope)
    to_model = with_heuristic.withColumn("_passes", passes).filter("_passes")
    groups = request_groups(to_model.select(*pairs.columns)).repartition(max(1, cores))
    scores = groups.mapInPandas(_partition_scorer(handle, traffic_word_counts(pairs)), SCORES_SCHEMA)
    joined = with_heuristic.join(scores, on=["source_event_id", "target_event_id"], how="left")
    failed = F.col("model_error").isNotNull()
    settled = F.col("rephrase_score").isNull() & ~failed
    return joined.select(
        *pairs.columns,
        F.when(failed, F.col("_heuristic_score")).when(settled, F.lit(0.0)).otherwise(F.col("rephrase_score")).alias("rephrase_score"),
        F.when(failed, F.lit(HEURISTIC_DETECTOR)).otherwise(F.lit(handle.label)).alias("rephrase_detector"),
        F.when(failed, F.lit(SCORING_FALLBACK)).when(settled, F.lit(SCORING_CASCADE)).otherwise(F.lit(SCORING_MODEL)).alias("scoring"),
        "model_error",
    )


class DetectorScorer:
    """A ``silver.PairScorer`` backed by a saved detector (picklable: only the handle travels)."""

    def __init__(self, handle: DetectorHandle) -> None:
        self.handle = handle

    def __call__(self, pairs: DataFrame, config: DetectConfig) -> DataFrame:
        return score_pairs_with_detector(pairs, self.handle, config)

    def __repr__(self) -> str:
        return f"DetectorScorer({self.handle.label})"


def handle_for(path: str | Path, label: str, config: RephraseModelConfig) -> DetectorHandle:
    """How the stage runs a detector: device, batching, quantization and the cascade from ``config``."""
    return DetectorHandle(
        path=str(path),
        label=label + ("+int8" if config.quantize and config.device != "cuda" else ""),
        quantize=config.quantize,
        fp32_ffn_output_layers=config.fp32_ffn_output_layers,
        batch_size=config.batch_size,
        threads=config.torch_threads,
        device=config.device,
        gpu_batch_size=config.gpu_batch_size,
        cascade_min_score=config.cascade_min_score,
        cascade_scope=config.cascade_scope,
    )


def champion_detector_dir(lake: LakePaths) -> tuple[str, Path] | None:
    """(version, local folder) of ``rephrase-detector@champion``, downloaded once into ``LAKE/_models``."""
    from feedback.core.registry import REPHRASE_DETECTOR, champion_artifact_dir
    from feedback.rephrase.pyfunc import DETECTOR_ARTIFACT

    return champion_artifact_dir(lake, REPHRASE_DETECTOR, DETECTOR_ARTIFACT, "config.json")


def detector_archive(folder: Path, name: str, marker: str = "config.json") -> Path:
    """``folder`` zipped (its files at the archive's root) next to it as ``name``.zip, built once.

    Spark ships a local *directory* only to a local master (``UNSUPPORTED_ADD_FILE.LOCAL_DIRECTORY``
    otherwise); an archive added with ``addArchive`` reaches every executor and is unpacked there
    into a folder named after the archive, which ``SparkFiles.get`` returns.
    """
    if not (folder / marker).is_file():
        raise ValueError(f"folder: {folder} is not a saved model (no {marker})")
    archive = folder.parent / f"{name}.zip"
    if not archive.is_file():
        staging = folder.parent / f".{name}.building"
        built = Path(shutil.make_archive(str(staging), "zip", root_dir=folder))
        built.replace(archive)
    return archive


def worker_path(spark: SparkSession, folder: Path, name: str, marker: str = "config.json") -> str:
    """Where the workers find the saved model ``folder``: the folder itself on a local master; on a
    cluster, ``folder`` zipped (``detector_archive``), added with ``addArchive`` and resolved on the
    executors with ``SparkFiles.get`` (the archive's name, a relative path)."""
    if spark.sparkContext.master.startswith("local"):
        return str(folder)
    archive = detector_archive(folder, name, marker)
    spark.sparkContext.addArchive(str(archive))
    return archive.name


def resolve_scorer(spark: SparkSession, config: AppConfig, lake: LakePaths) -> PairScorer:
    """The pair scorer for this run: the registered champion, or the heuristic (with a warning)."""
    from feedback.core.registry import REPHRASE_DETECTOR, champion_uri

    if not config.rephrase_model.use_champion:
        LOG.info("rephrase_model.use_champion is false: scoring rephrases with the heuristic")
        return score_pairs_heuristic
    found = champion_detector_dir(lake)
    if found is None:
        LOG.warning("no %s in the registry: scoring rephrases with the heuristic baseline", champion_uri(REPHRASE_DETECTOR))
        return score_pairs_heuristic
    version, folder = found
    path = worker_path(spark, folder, f"{REPHRASE_DETECTOR}-{version}")
    LOG.info(
        "scoring rephrases with %s v%s (%ss below heuristic score %s settled by the cascade)",
        REPHRASE_DETECTOR,
        version,
        config.rephrase_model.cascade_scope,
        config.rephrase_model.cascade_min_score,
    )
    return DetectorScorer(handle_for(path, f"{REPHRASE_DETECTOR}/{version}", config.rephrase_model))
