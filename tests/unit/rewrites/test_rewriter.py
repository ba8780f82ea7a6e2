"""The query rewriter: normalisation parity with Spark, the pyfunc model, offline win/loss, the registry, serving."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.core.truth import read_truth
from feedback.rewrites.evaluate import RewriteEvaluation, evaluate_rewrites, implicit_traffic, truth_traffic
from feedback.rewrites.pyfunc import QueryRewriter, model_signature, normalize_text, rewrite_frame
from feedback.silver.sessionize import normalize_utterance

from support.mining_data import HAND_CHAINS, silver_frame
from support.paths import REPO
from support.rewrite_truth import BEATLES, BEETLES, LONDON, PARIS, truth_record

TEXTS = [
    "  Play THE Beatles!! ",
    "don't_stop me now",
    "what's the weather in São Paulo?",
    "Ωmega ½ ² — tab\there\nnewline",
    "ÇA VA?  très   bien…",
    "",
    "!!!",
    "l'été 2024, 10:30 p.m.",
]


def test_normalize_text_matches_spark(spark: SparkSession) -> None:
    frame = spark.createDataFrame([(t,) for t in TEXTS], "text string")
    spark_side = [r["n"] for r in frame.select(normalize_utterance(F.col("text")).alias("n")).collect()]
    assert [normalize_text(t) for t in TEXTS] == spark_side
    with pytest.raises(TypeError, match="text must be a string"):
        normalize_text(None)  # type: ignore[arg-type]


def test_the_model_rewrites_known_sources_and_keeps_the_rest() -> None:
    model = QueryRewriter({"play the beetles": ("play the beatles", 0.75)})
    result = model.predict(None, pd.DataFrame({"utterance": ["Play the Beetles!", "play the beatles", None]}))
    expected = pd.DataFrame(
        {
            "utterance": ["Play the Beetles!", "play the beatles", ""],
            "rewrite": ["play the beatles", "play the beatles", ""],
            "probability": [0.75, 0.0, 0.0],
            "rewritten": [True, False, False],
            "layer": ["precomputed", "none", "none"],
        }
    )
    pd.testing.assert_frame_equal(result, expected)
    with pytest.raises(ValueError, match="needs an 'utterance' column"):
        model.predict(None, pd.DataFrame({"text": ["x"]}))
    assert [c.name for c in model_signature().outputs.inputs] == list(expected.columns)


SERVING_WITHOUT_SPARK = """
import importlib.abc, json, sys
from pathlib import Path

class NoSpark(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pyspark":
            raise ImportError("no pyspark in a serving runtime")
        return None

sys.meta_path.insert(0, NoSpark())
import mlflow
import pandas as pd
import feedback.rewrites

scratch = Path(sys.argv[1])
mlflow.set_tracking_uri(f"sqlite:///{scratch / 'mlflow.db'}")
table = scratch / "rewrites.json"
table.write_text(json.dumps([{"source_utterance": "play the beetles", "rewrite_utterance": "play the beatles", "probability": 0.75}]))
code = str(Path(feedback.rewrites.__file__).with_name("model.py"))
with mlflow.start_run():
    info = mlflow.pyfunc.log_model(name="query-rewriter", python_model=code, artifacts={"rewrites": str(table)},
                                   pip_requirements=["mlflow", "pandas"])
model = mlflow.pyfunc.load_model(info.model_uri)
out = model.predict(pd.DataFrame({"utterance": ["Play the Beetles!", "stop"]}))
print(json.dumps({"rows": out.to_dict(orient="records"), "pyspark_loaded": any(m.split(".")[0] == "pyspark" for m in sys.modules)}))
"""


def test_the_query_rewriter_logs_loads_and_serves_without_pyspark(tmp_path: Path) -> None:
    """A serving runtime has mlflow and pandas (the model's pip_requirements), not Spark."""
    source = REPO / "src"
    # A fresh runtime: no MLflow settings inherited from this process (an active experiment id, say).
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env = {**inherited, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SERVING_WITHOUT_SPARK, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "rows": [
            {"utterance": "Play the Beetles!", "rewrite": "play the beatles", "probability": 0.75, "rewritten": True, "layer": "precomputed"},
            {"utterance": "stop", "rewrite": "stop", "probability": 0.0, "rewritten": False, "layer": "none"},
        ],
        "pyspark_loaded": False,
    }


def test_rewrite_frame_on_an_empty_input() -> None:
    assert rewrite_frame({}, pd.Series([], dtype=object)).shape == (0, 5)


# ----- offline win/loss ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [
        truth_record("r1", "Play the Beetles", *BEATLES, defective=True),  # win
        truth_record("r2", "play the beetles", *BEETLES, defective=False),  # loss: fine, and meant the other band
        truth_record("r3", "play the beetles", *BEATLES, defective=False),  # neutral: fine, same meaning
        truth_record("t1", "play the beatles", *BEATLES, defective=False),
        truth_record("t2", "play the beatles", *BEATLES, defective=False),
        truth_record("t3", "play the beatles", *LONDON, defective=True),  # a failure: does not define the meaning
        truth_record("w1", "weather paris", *PARIS, defective=True),  # loss: the target was never served right
        truth_record("f1", "forecast paris", *PARIS, defective=True),
        truth_record("l1", "wether london", *LONDON, defective=True),  # win
        truth_record("l2", "weather london", *LONDON, defective=False),
        truth_record("x1", "foo", "Unknown", {}, defective=True),  # defective, no rewrite
        truth_record("s1", "stop", "Stop", {}, defective=False, system=True),  # not a request
    ]
    path = tmp_path_factory.mktemp("truth") / "ground_truth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_win_loss_against_ground_truth(spark: SparkSession, truth_file: Path) -> None:
    rewrites = spark.createDataFrame(
        [
            ("play the beetles", "play the beatles"),
            ("weather paris", "forecast paris"),
            ("wether london", "weather london"),
            ("never said", "weather london"),
        ],
        "source_utterance string, rewrite_utterance string",
    )
    result = evaluate_rewrites(rewrites, truth_traffic(read_truth(spark, truth_file)))
    assert result == RewriteEvaluation(
        rewrites=4,
        rewrites_won=1,  # wether london
        rewrites_lost=1,  # weather paris
        rewrites_neutral=2,  # play the beetles (1 win, 1 loss), never said (no traffic)
        requests=11,
        defective_requests=6,
        rewritten_requests=5,
        defective_rewritten_requests=3,
        wins=2,
        losses=2,
        neutral=1,
        unknown=0,
    )
    assert (result.win_loss_by_traffic, result.win_loss_by_rewrite) == (1.0, 1.0)
    assert (result.fixed_share, result.fixed_share_of_rewritten, result.net_fixed_share) == (2 / 6, 2 / 3, 0.0)


def test_no_losses_is_an_infinite_ratio_left_out_of_the_metrics(spark: SparkSession, truth_file: Path) -> None:
    rewrites = spark.createDataFrame([("wether london", "weather london")], "source_utterance string, rewrite_utterance string")
    result = evaluate_rewrites(rewrites, truth_traffic(read_truth(spark, truth_file)))
    assert (result.wins, result.losses, math.isinf(result.win_loss_by_traffic)) == (1, 0, True)
    assert "win_loss_by_traffic" not in result.metrics() and result.metrics()["wins"] == 1.0
    assert "inf (no losses)" in result.render()
    assert result.as_dict()["win_loss_by_traffic"] is None and json.dumps(result.as_dict(), allow_nan=False)


def test_implicit_evaluation_reads_meanings_from_silver(spark: SparkSession) -> None:
    rewrites = spark.createDataFrame([("a", "b")], "source_utterance string, rewrite_utterance string")
    result = evaluate_rewrites(rewrites, implicit_traffic(silver_frame(spark, HAND_CHAINS)))
    # a's four requests: two chains ended at b (paris: wins), one at c (london: a loss), one gave up (unknown).
    assert (result.wins, result.losses, result.neutral, result.unknown) == (2, 1, 0, 1)
    assert (result.requests, result.defective_requests, result.net_fixed_share) == (10, 6, 1 / 6)


def test_a_later_slice_is_judged_with_target_meanings_from_all_traffic(spark: SparkSession, truth_file: Path) -> None:
    rewrites = spark.createDataFrame([("wether london", "weather london")], "source_utterance string, rewrite_utterance string")
    traffic = truth_traffic(read_truth(spark, truth_file))
    later = traffic.filter(F.col("utterance") == "wether london")  # the target is not said again in the slice
    alone = evaluate_rewrites(rewrites, later)
    assert (alone.requests, alone.wins, alone.losses) == (1, 0, 1)  # no served target in the slice: judged a loss
    judged = evaluate_rewrites(rewrites, later, meanings=traffic)
    assert (judged.requests, judged.defective_requests, judged.wins, judged.losses, judged.neutral) == (1, 1, 1, 0, 0)
    with pytest.raises(ValueError, match=r"meanings is missing columns \['defective'\]"):
        evaluate_rewrites(rewrites, later, meanings=traffic.drop("defective"))
