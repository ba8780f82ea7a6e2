"""Rewrite mining: the absorbing-chain maths by hand, the Spark stages, thresholds, vetoes, MERGE history."""

from __future__ import annotations

import dataclasses
import datetime as dt
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import ConfigError, MiningConfig
from feedback.core.lake import LakePaths
from feedback.rewrites.chain import (
    CANDIDATE_SCHEMA,
    absorption_probabilities,
    best_targets,
    build_chain,
    solve_components,
)
from feedback.rewrites.mine import (
    MiningOutcome,
    chain_support,
    check_deletions,
    connected_components,
    ensure_rewrite_tables,
    mine_rewrites,
    select_rewrites,
    state_transitions,
    utterance_stats,
)

from support.mining_data import HAND_CHAINS, Chain, silver_frame

MINED_AT = dt.datetime(2026, 11, 9, 12, 0, 0)
RUN_ID = "run-1"
# The hand-worked example (tests/support/mining_data.py): visits of a: 2 -> b, 1 -> c, 1 failure;
# b: 1 -> a, 3 successes; c: 1 success, 1 failure.
HAND_TRANSITIONS = [
    ("a", "b", "next", 2.0),
    ("a", "c", "next", 1.0),
    ("a", None, "failure", 1.0),
    ("b", "a", "next", 1.0),
    ("b", None, "success", 3.0),
    ("c", None, "success", 1.0),
    ("c", None, "failure", 1.0),
]
# Worked by hand: Q = [[0, 1/2, 1/4], [1/4, 0, 0], [0, 0, 0]], s = (0, 3/4, 1/2), f = (1/4, 0, 1/2).
# B[., S(b)]: x_a = x_b/2 + x_c/4, x_b = x_a/4 + 3/4, x_c = 0        -> x_a = 3/7, x_b = 6/7
# B[., S(c)]: y_a = y_b/2 + 1/8,  y_b = y_a/4,       y_c = 1/2      -> y_a = 1/7, y_b = 1/28
# B[., F]:    z_a = z_b/2 + z_c/4 + 1/4, z_b = z_a/4, z_c = 1/2     -> z_a = 3/7, z_b = 3/28
HAND_B = [
    [Fraction(0), Fraction(3, 7), Fraction(1, 7)],
    [Fraction(0), Fraction(6, 7), Fraction(1, 28)],
    [Fraction(0), Fraction(0), Fraction(1, 2)],
]
HAND_F = [Fraction(3, 7), Fraction(3, 28), Fraction(1, 2)]
LOOSE = MiningConfig(
    min_probability=0.0,
    min_support_users=2,  # the least the configuration allows; a -> b has two users
    min_support_chains=1,
    min_target_success_rate=0.0,
    max_source_success_rate=1.0,
    beat_own_success=True,
)
VETO_COLUMNS = "source_utterance string, rewrite_utterance string, reason string, vetoed_at timestamp"


def as_float(values: list[list[Fraction]] | list[Fraction]) -> np.ndarray:
    return np.array(values, dtype=float)


# ----- the pure core -------------------------------------------------------------------------


def test_hand_worked_absorption_probabilities() -> None:
    chain = build_chain(HAND_TRANSITIONS)
    assert chain.states == ("a", "b", "c")
    np.testing.assert_allclose(chain.transient.toarray(), [[0, 0.5, 0.25], [0.25, 0, 0], [0, 0, 0]], atol=0)
    np.testing.assert_allclose(chain.success, [0, 0.75, 0.5], atol=0)
    np.testing.assert_allclose(chain.failure, [0.25, 0, 0.5], atol=0)
    success, failure = absorption_probabilities(chain)
    np.testing.assert_allclose(success, as_float(HAND_B), rtol=0, atol=1e-14)
    np.testing.assert_allclose(failure, as_float(HAND_F), rtol=0, atol=1e-14)
    np.testing.assert_allclose(success.sum(axis=1) + failure, [1, 1, 1], atol=1e-14)


def test_build_chain_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        build_chain([("a", None, "maybe", 1.0)])
    with pytest.raises(ValueError, match="a next step needs a target"):
        build_chain([("a", None, "next", 1.0)])
    with pytest.raises(ValueError, match="weight must be >= 0"):
        build_chain([("a", None, "success", -1.0)])


def test_a_state_seen_only_as_a_target_counts_as_failure() -> None:
    chain = build_chain([("a", "z", "next", 1.0)])
    success, failure = absorption_probabilities(chain)
    np.testing.assert_allclose(success, [[0, 0], [0, 0]], atol=0)
    np.testing.assert_allclose(failure, [1, 1], atol=0)


def hand_frame(component: int = 7, vetoes: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    rows = [(component, kind, source, target, weight) for source, target, kind, weight in HAND_TRANSITIONS]
    rows += [(component, "veto", source, target, 0.0) for source, target in vetoes or []]
    return pd.DataFrame(rows, columns=["component", "kind", "source", "target", "weight"])


def test_solve_components_picks_the_best_other_success_state() -> None:
    result = solve_components(hand_frame())
    expected = pd.DataFrame(
        {
            "component": [7, 7],
            "source_utterance": ["a", "b"],
            "rewrite_utterance": ["b", "c"],
            "probability": [round(3 / 7, 12), round(1 / 28, 12)],
            "own_probability": [0.0, round(6 / 7, 12)],
            "other_probability": [round(4 / 7, 12), round(1 / 28, 12)],
            "component_states": [3, 3],
        }
    )
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=False)


def test_a_vetoed_target_gives_way_to_the_next_best() -> None:
    result = solve_components(hand_frame(vetoes=[("a", "b"), ("a", "not-in-graph")]))
    assert result[["source_utterance", "rewrite_utterance", "probability"]].values.tolist() == [
        ["a", "c", round(1 / 7, 12)],
        ["b", "c", round(1 / 28, 12)],
    ]


def random_component(rng: np.random.Generator, component: int, size: int) -> list[tuple[int, str, str, str | None, float]]:
    names = [f"c{component}-s{i:03d}" for i in range(size)]
    rows: list[tuple[int, str, str, str | None, float]] = []
    for i, name in enumerate(names):
        rows.append((component, "success", name, None, float(rng.integers(0, 4))))
        rows.append((component, "failure", name, None, float(rng.integers(1, 3))))
        neighbours = {i - 1, i + 1, int(rng.integers(size))} - {-1, size}
        for j in sorted(neighbours):
            rows.append((component, "next", name, names[j], float(rng.integers(1, 4))))
    return rows


def test_stacked_blocks_and_chunked_columns_equal_one_dense_solve_per_component() -> None:
    rng = np.random.default_rng(5)
    rows = [row for c, size in enumerate([2, 3, 5, 8, 13, 40]) for row in random_component(rng, c, size)]
    frame = pd.DataFrame(rows, columns=["component", "kind", "source", "target", "weight"])
    # max_cells=64 forces several batches and one-column chunks for the largest component.
    stacked = solve_components(frame, max_cells=64).set_index("source_utterance")
    for component, part in frame.groupby("component"):
        chain = build_chain(
            [(r.source, r.target if r.kind == "next" else None, r.kind, r.weight) for r in part.itertuples()]
        )
        success, _ = absorption_probabilities(chain)
        for i, name in enumerate(chain.states):
            others = success[i].copy()
            others[i] = -1.0
            best = int(np.argmax(np.round(others, 12)))
            row = stacked.loc[name]
            expected = chain.states[best] if round(others[best], 12) > 0 else None
            assert row["rewrite_utterance"] == expected, (component, name)
            assert row["probability"] == pytest.approx(max(others[best], 0.0), abs=1e-12)
            assert row["own_probability"] == pytest.approx(success[i, i], abs=1e-12)
            assert row["other_probability"] == pytest.approx(success[i].sum() - success[i, i], abs=1e-11)


def test_best_targets_validates_its_arguments() -> None:
    q = sp.csr_matrix((2, 2))
    with pytest.raises(ValueError, match="success must have shape"):
        best_targets(q, np.zeros(3), np.zeros(2, dtype=np.int64), np.full(2, 2))
    with pytest.raises(ValueError, match="contiguous blocks"):
        best_targets(q, np.zeros(2), np.zeros(2, dtype=np.int64), np.full(2, 1))
    with pytest.raises(ValueError, match="inside one block"):
        best_targets(q, np.zeros(2), np.array([0, 1]), np.full(2, 1), (np.array([0]), np.array([1])))


def test_oversized_components_are_skipped_and_reported() -> None:
    result = solve_components(hand_frame(), max_component_states=2)
    assert result[["source_utterance", "rewrite_utterance", "component_states"]].values.tolist() == [
        ["a", None, 3],
        ["b", None, 3],
        ["c", None, 3],
    ]


# ----- Spark stages ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hand_turns(spark: SparkSession) -> DataFrame:
    return silver_frame(spark, HAND_CHAINS).cache()


def no_vetoes(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], VETO_COLUMNS)


def vetoes(spark: SparkSession, pairs: list[tuple[str, str | None]]) -> DataFrame:
    return spark.createDataFrame([(s, t, "test", MINED_AT) for s, t in pairs], VETO_COLUMNS)


def test_state_transitions_count_visits_by_outcome(spark: SparkSession, hand_turns: DataFrame) -> None:
    expected = spark.createDataFrame(HAND_TRANSITIONS, "source string, target string, kind string, weight double")
    assertDataFrameEqual(state_transitions(hand_turns), expected)


def test_a_turn_rephrased_twice_splits_its_visit(spark: SparkSession) -> None:
    turns = silver_frame(spark, [Chain("u1", ("a", "b"), True)])
    extra = turns.filter("turn_index = 1").withColumn("event_id", F.lit("s000-t9")).withColumn("normalized_utterance", F.lit("c"))
    expected = spark.createDataFrame(
        [("a", "b", "next", 0.5), ("a", "c", "next", 0.5), ("b", None, "success", 1.0), ("c", None, "success", 1.0)],
        "source string, target string, kind string, weight double",
    )
    assertDataFrameEqual(state_transitions(turns.unionByName(extra)), expected)


def test_support_and_success_rates(spark: SparkSession, hand_turns: DataFrame) -> None:
    support = spark.createDataFrame(
        [("a", "b", 2, 2), ("a", "c", 1, 1)],
        "source_utterance string, rewrite_utterance string, support_chains long, support_users long",
    )
    assertDataFrameEqual(chain_support(hand_turns), support)
    stats = spark.createDataFrame(
        [("a", 4, 0, 0.0), ("b", 4, 3, 0.75), ("c", 2, 1, 0.5)],
        "utterance string, traffic long, successes long, success_rate double",
    )
    assertDataFrameEqual(utterance_stats(hand_turns), stats)


def test_connected_components_of_a_long_path_and_a_pair(spark: SparkSession) -> None:
    path = [(f"p{i:02d}", f"p{i + 1:02d}") for i in range(8)] + [("x", "y"), ("y", "x"), ("z", "z")]
    edges = spark.createDataFrame(path, "source string, target string")
    components, rounds = connected_components(edges, max_iterations=12)
    groups = sorted(sorted(r["members"]) for r in components.groupBy("component").agg(F.collect_list("utterance").alias("members")).collect())
    assert groups == sorted([[f"p{i:02d}" for i in range(9)], ["x", "y"]])
    assert rounds < 9  # pointer jumping: fewer rounds than the path is long
    with pytest.raises(RuntimeError, match="raise mining.max_label_iterations"):
        connected_components(edges, max_iterations=1)


def rewrite_rows(spark: SparkSession, rows: list[tuple[str, str, float, int, int, float, float]]) -> DataFrame:
    return spark.createDataFrame(
        [(*row, MINED_AT, RUN_ID) for row in rows],
        "source_utterance string, rewrite_utterance string, probability double, support_users long, "
        "support_chains long, source_success_rate double, target_success_rate double, mined_at timestamp, run_id string",
    )


A_TO_B = ("a", "b", round(3 / 7, 12), 2, 2, 0.0, 0.75)


@pytest.fixture(scope="module")
def hand_mined(spark: SparkSession, hand_turns: DataFrame) -> MiningOutcome:
    """The whole hand example mined once with the defaults; threshold tests re-select its candidates."""
    return mine_rewrites(hand_turns, no_vetoes(spark), MiningConfig(), RUN_ID, MINED_AT)


def reselect(turns: DataFrame, outcome: MiningOutcome, veto_frame: DataFrame, config: MiningConfig) -> DataFrame:
    return select_rewrites(
        outcome.candidates, utterance_stats(turns), chain_support(turns), veto_frame, config, RUN_ID, MINED_AT
    )


def test_hand_example_mines_exactly_one_rewrite(spark: SparkSession, hand_mined: MiningOutcome) -> None:
    assertDataFrameEqual(hand_mined.rewrites, rewrite_rows(spark, [A_TO_B]))
    # The component is the smallest 64-bit hash of its utterances.
    component = spark.range(1).select(F.least(*[F.xxhash64(F.lit(s)) for s in "abc"])).first()[0]
    candidates = spark.createDataFrame(
        [
            (component, "a", "b", round(3 / 7, 12), 0.0, round(4 / 7, 12), 3),
            (component, "b", "c", round(1 / 28, 12), round(6 / 7, 12), round(1 / 28, 12), 3),
        ],
        CANDIDATE_SCHEMA,
    )
    assertDataFrameEqual(hand_mined.candidates, candidates)
    assert hand_mined.candidates.schema == spark.createDataFrame([], CANDIDATE_SCHEMA).schema
    assert (hand_mined.states, hand_mined.components, hand_mined.skipped_components) == (3, 1, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"min_probability": 0.43},  # 3/7 = 0.4286
        {"min_target_share": 0.76},  # b takes 3/7 of a's 4/7 found elsewhere: 0.75
        {"min_support_users": 3},
        {"min_support_chains": 3},
        {"min_target_success_rate": 0.76},  # b succeeds 3 times in 4
    ],
    ids=lambda c: next(iter(c)),
)
def test_each_threshold_can_stop_the_rewrite(
    spark: SparkSession, hand_turns: DataFrame, hand_mined: MiningOutcome, change: dict[str, float]
) -> None:
    config = dataclasses.replace(MiningConfig(), **change)
    assert reselect(hand_turns, hand_mined, no_vetoes(spark), config).count() == 0


def test_an_utterance_that_succeeds_on_its_own_is_never_rewritten(
    spark: SparkSession, hand_turns: DataFrame, hand_mined: MiningOutcome
) -> None:
    # b's best other target is c (1/28); b succeeds in 3 of its 4 requests, above the default ceiling of 0.7 ...
    relaxed = dataclasses.replace(LOOSE, max_source_success_rate=MiningConfig().max_source_success_rate, beat_own_success=False)
    assertDataFrameEqual(reselect(hand_turns, hand_mined, no_vetoes(spark), relaxed), rewrite_rows(spark, [A_TO_B]))
    # ... and with every threshold open, beat_own_success still keeps it: B[b, S(b)] = 6/7 > 1/28.
    assertDataFrameEqual(reselect(hand_turns, hand_mined, no_vetoes(spark), LOOSE), rewrite_rows(spark, [A_TO_B]))


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        ({}, True),
        ({"max_source_success_rate": 0.3}, False),  # d succeeds in 2 of its 5 requests
        ({"beat_own_success": True}, True),  # 3/5 via e beats 2/5 on its own
        ({"beat_own_success": True, "max_source_success_rate": 1.0, "_own": 0.6}, False),
    ],
)
def test_the_source_success_gates(spark: SparkSession, change: dict[str, object], kept: bool) -> None:
    # Candidates, statistics and support as the earlier stages give them for
    # d: 2 successes on its own, 3 rephrased to e (which succeeds), by 3 users.
    change = dict(change)
    own = float(change.pop("_own", 0.4))  # type: ignore[arg-type]
    candidates = spark.createDataFrame([(1, "d", "e", 0.6, own, 0.6, 2)], CANDIDATE_SCHEMA)
    stats = spark.createDataFrame(
        [("d", 5, 2, 0.4), ("e", 3, 3, 1.0)], "utterance string, traffic long, successes long, success_rate double"
    )
    support = spark.createDataFrame(
        [("d", "e", 3, 3)], "source_utterance string, rewrite_utterance string, support_chains long, support_users long"
    )
    config = dataclasses.replace(MiningConfig(), **change)
    selected = select_rewrites(candidates, stats, support, no_vetoes(spark), config, RUN_ID, MINED_AT)
    expected = rewrite_rows(spark, [("d", "e", 0.6, 3, 3, 0.4, 1.0)] if kept else [])
    assertDataFrameEqual(selected, expected)


def test_vetoes_are_respected(spark: SparkSession, hand_turns: DataFrame, hand_mined: MiningOutcome) -> None:
    # A pair veto is passed over inside the solver (test_a_vetoed_target_gives_way_to_the_next_best)
    # and through a whole run (test_run_merges_by_source_and_keeps_the_history); a veto without a
    # rewrite rules out the source whatever its target.
    assert reselect(hand_turns, hand_mined, vetoes(spark, [("a", None)]), LOOSE).count() == 0
    assertDataFrameEqual(
        reselect(hand_turns, hand_mined, vetoes(spark, [("b", None), ("a", "c")]), LOOSE), rewrite_rows(spark, [A_TO_B])
    )


# ----- the guard against emptying the table (the job itself: tests/integration/test_mining_job.py) ---


def test_check_deletions_validates_the_share(spark: SparkSession, tmp_path: Path) -> None:
    lake = LakePaths.at(tmp_path / "lake")
    ensure_rewrite_tables(spark, lake)
    nothing = spark.read.format("delta").load(lake.rewrites)
    assert check_deletions(spark, lake.rewrites, nothing, 0.0) == (0, 0)  # an empty table refuses nothing
    for bad in (1.5, -0.1, True):
        with pytest.raises(ValueError, match="max_delete_share"):
            check_deletions(spark, lake.rewrites, nothing, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mining.max_delete_share"):
        MiningConfig(max_delete_share=1.5)
