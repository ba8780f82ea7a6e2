"""Keyed user ids in the gold sketches, the user key's sources, and the minimum crowd of a shown row."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, ConfigError, PrivacyConfig, load_config
from feedback.core.lake import LakePaths
from feedback.core.privacy import keyed_user_id, published, user_key
from feedback.gold.aggregate import rephrase_pairs_increment, utterance_defects_increment
from feedback.ops.notebook_queries import chains_behind, top_defective_utterances

KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
KEY = bytes.fromhex(KEY_HEX)
T0 = dt.datetime(2026, 11, 2, 10, 0)


def keyed(spark: SparkSession, ids: list[str], key: bytes) -> list[str]:
    frame = spark.createDataFrame([(i,) for i in ids], "user_id string")
    return [r[0] for r in frame.select(keyed_user_id(F.col("user_id"), key)).collect()]


def test_keyed_user_id_is_hmac_sha256(spark: SparkSession) -> None:
    ids = ["hh-1f2e3d4c5b0001", "jürgen.müller@example.de", "用户-42"]
    expected = [
        "f75a9f4a58968b96a1a8f7fb841dde36d041c7b8caa06e2e642c9275c73fb072",
        "8f69c4b1fe2945da995e275eb031cdce26dad6a547cc5a6b4d43f6759e84b7e2",
        "0418c94a51a990a7d53c98e74321a64ae56338ceb9f0473807ae1113ae6e1717",
    ]
    assert keyed(spark, ids, KEY) == expected
    assert expected == [hmac.new(KEY, i.encode(), hashlib.sha256).hexdigest() for i in ids]
    # RFC 4231 test cases 1 (a 20-byte key) and 6 (a key longer than the 64-byte block).
    assert keyed(spark, ["Hi There"], b"\x0b" * 20) == ["b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"]
    assert keyed(spark, ["Test Using Larger Than Block-Size Key - Hash Key First"], b"\xaa" * 131) == [
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    ]
    assert keyed(spark, [None], KEY) == [None]  # type: ignore[list-item]


def test_keyed_user_id_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="key must be at least 16 bytes, got 4"):
        keyed_user_id(F.col("user_id"), b"Jefe")
    with pytest.raises(TypeError, match="key must be bytes, got str"):
        keyed_user_id(F.col("user_id"), KEY_HEX)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_id must be a Column, got str"):
        keyed_user_id("user_id", KEY)  # type: ignore[arg-type]


def utterance_turns(spark: SparkSession, users: list[str]) -> DataFrame:
    return spark.createDataFrame(
        [(u, "play jazz", False, True, T0 + dt.timedelta(minutes=i)) for i, u in enumerate(users)],
        "user_id string, normalized_utterance string, is_system_command boolean, defect boolean, ts timestamp",
    )


def test_a_raw_user_id_cannot_probe_a_gold_sketch(spark: SparkSession) -> None:
    users = ["u1", "u2", "u3", "u4", "u5"]
    row = utterance_defects_increment(utterance_turns(spark, users), KEY)
    assert [(r["normalized_utterance"], r["traffic"], r["users"]) for r in row.collect()] == [("play jazz", 5, 5)]

    def probe(ids: DataFrame, sketch_of: F.Column) -> int:
        single = ids.agg(F.hll_sketch_agg(sketch_of).alias("probe"))
        return row.crossJoin(single).select(F.hll_sketch_estimate(F.hll_union("users_sketch", "probe"))).first()[0]

    known = spark.createDataFrame([("u1",)], "user_id string")
    # The raw id of a member looks like a sixth user: the sketch does not tell that u1 is in the row.
    assert probe(known, F.col("user_id")) == 6
    # Only the key holder's keyed id is recognised.
    assert probe(known, keyed_user_id(F.col("user_id"), KEY)) == 5
    # The leak closed: a sketch of raw ids recognises u1 (the estimate does not move).
    raw_row = utterance_turns(spark, users).agg(F.hll_sketch_agg("user_id").alias("users_sketch"))
    single = known.agg(F.hll_sketch_agg("user_id").alias("probe"))
    assert raw_row.crossJoin(single).select(F.hll_sketch_estimate(F.hll_union("users_sketch", "probe"))).first()[0] == 5
    assert row.first()["users_sketch"] != raw_row.first()["users_sketch"]


def test_rephrase_pair_sketches_hold_keyed_ids(spark: SparkSession) -> None:
    turns = spark.createDataFrame(
        [
            ("e1", None, "wether london", False, True, "u1", T0),
            ("e2", "e1", "weather london", True, False, "u1", T0 + dt.timedelta(minutes=1)),
            ("e3", None, "wether london", False, True, "u2", T0 + dt.timedelta(minutes=2)),
            ("e4", "e3", "weather london", True, False, "u2", T0 + dt.timedelta(minutes=3)),
        ],
        "event_id string, rephrase_of string, normalized_utterance string, chain_success boolean, defect boolean, "
        "user_id string, ts timestamp",
    )
    pair = rephrase_pairs_increment(turns, KEY)
    keyed_ids = spark.createDataFrame(
        [("f75a9f4a58968b96a1a8f7fb841dde36d041c7b8caa06e2e642c9275c73fb072",)], "k string"
    )  # HMAC of hh-1f2e3d4c5b0001: a third user
    assert [(r["utterance"], r["rephrase"], r["chains"], r["users"]) for r in pair.collect()] == [
        ("wether london", "weather london", 2, 2)
    ]
    expected_sketch = spark.createDataFrame([("u1",), ("u2",)], "user_id string").agg(
        F.hll_sketch_agg(keyed_user_id(F.col("user_id"), KEY)).alias("s")
    )
    assert pair.first()["users_sketch"] == expected_sketch.first()["s"]
    grown = pair.crossJoin(keyed_ids.agg(F.hll_sketch_agg("k").alias("p"))).select(
        F.hll_sketch_estimate(F.hll_union("users_sketch", "p"))
    )
    assert grown.first()[0] == 3


GOLD_UTTERANCES = "normalized_utterance string, traffic long, defects long, defect_rate double, users long"
GOLD_PAIRS = "utterance string, rephrase string, chains long, success_share double, users long"


def test_rows_of_fewer_than_min_users_are_not_shown(spark: SparkSession) -> None:
    utterances = spark.createDataFrame(
        [("four users", 40, 30, 0.75, 4), ("five users", 20, 10, 0.5, 5), ("one user", 90, 90, 1.0, 1)], GOLD_UTTERANCES
    )
    assert [r["normalized_utterance"] for r in published(utterances, 5).collect()] == ["five users"]
    pairs = spark.createDataFrame(
        [
            ("five users", "5 users", 9, 1.0, 4),  # most chains, but 4 users: left out before ranking
            ("five users", "fife users", 3, 0.5, 5),
        ],
        GOLD_PAIRS,
    )
    shown = top_defective_utterances(utterances, pairs, n=10, min_users=5).collect()
    assert [(r["normalized_utterance"], r["users"], [tuple(x) for x in r["rephrases"]]) for r in shown] == [
        ("five users", 5, [("fife users", 3, 0.5)])
    ]
    default = top_defective_utterances(utterances, pairs).collect()  # privacy.min_users defaults to 5
    assert [r["normalized_utterance"] for r in default] == ["five users"]
    with_four = top_defective_utterances(utterances, pairs, min_users=4).collect()
    assert [r["normalized_utterance"] for r in with_four] == ["four users", "five users"]


def test_published_rejects_bad_arguments(spark: SparkSession) -> None:
    utterances = spark.createDataFrame([("a", 1, 1, 1.0, 9)], GOLD_UTTERANCES)
    with pytest.raises(ValueError, match="min_users must be an integer >= 2, got 1"):
        published(utterances, 1)
    with pytest.raises(ValueError, match="min_users must be an integer >= 2, got True"):
        top_defective_utterances(utterances, utterances, min_users=True)
    with pytest.raises(ValueError, match="frame has no column 'users'"):
        published(utterances.drop("users"), 5)


def test_privacy_config_min_users() -> None:
    assert AppConfig().privacy == PrivacyConfig(min_users=5)
    assert load_config(None, {"privacy": {"min_users": 10}}).privacy.min_users == 10
    with pytest.raises(ConfigError, match=r"privacy.min_users: must be an integer >= 2, got 1"):
        load_config(None, {"privacy": {"min_users": 1}})


def test_rewrite_review_chains_show_no_user_ids(spark: SparkSession) -> None:
    turns = spark.createDataFrame(
        [
            ("e1", "e1", "u1", 0, T0, "A", "a", "ok", True, None, None, False),
            ("e2", "e1", "u1", 1, T0 + dt.timedelta(minutes=1), "B", "b", "ok", False, 0.9, "heuristic", False),
        ],
        "event_id string, chain_id string, user_id string, turn_index int, ts timestamp, utterance string, "
        "normalized_utterance string, status string, defect boolean, rephrase_score double, rephrase_detector string, "
        "is_system_command boolean",
    )
    chains = chains_behind(turns, "a", "b")
    assert chains.columns == [
        "chain_id",
        "turn_index",
        "ts",
        "utterance",
        "normalized_utterance",
        "status",
        "defect",
        "rephrase_score",
        "rephrase_detector",
    ]
    assert [tuple(r) for r in chains.select("chain_id", "turn_index", "normalized_utterance").collect()] == [
        ("e1", 0, "a"),
        ("e1", 1, "b"),
    ]


# ----- the key ---------------------------------------------------------------------------------------


def test_key_from_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDBACK_USER_KEY_FILE", raising=False)
    monkeypatch.setenv("FEEDBACK_USER_KEY", f"  {KEY_HEX}\n")
    assert user_key(LakePaths.at(tmp_path / "lake")) == KEY
    assert not (tmp_path / "lake").exists()  # nothing written to the lake
    assert user_key(LakePaths.at(tmp_path / "lake"), environ={"FEEDBACK_USER_KEY": "ab" * 16}) == b"\xab" * 16


def test_key_from_a_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "user_key.hex"
    secrets.write_text("00112233445566778899aabbccddeeff\n")
    environ = {"FEEDBACK_USER_KEY_FILE": str(secrets)}
    assert user_key(LakePaths.at(tmp_path / "lake"), environ=environ) == bytes.fromhex("00112233445566778899aabbccddeeff")
    with pytest.raises(FileNotFoundError, match="FEEDBACK_USER_KEY_FILE: no such file"):
        user_key(LakePaths.at(tmp_path / "lake"), environ={"FEEDBACK_USER_KEY_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="FEEDBACK_USER_KEY and FEEDBACK_USER_KEY_FILE are both set"):
        user_key(LakePaths.at(tmp_path / "lake"), environ={**environ, "FEEDBACK_USER_KEY": KEY_HEX})


def test_bad_keys_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FEEDBACK_USER_KEY: the user key must be hex"):
        user_key(LakePaths.at(tmp_path), environ={"FEEDBACK_USER_KEY": "correct horse battery staple"})
    with pytest.raises(ValueError, match="FEEDBACK_USER_KEY: the user key must be at least 16 bytes .*, got 4"):
        user_key(LakePaths.at(tmp_path), environ={"FEEDBACK_USER_KEY": "deadbeef"})
    with pytest.raises(ValueError, match="lake s3://bucket/lake is remote: set FEEDBACK_USER_KEY"):
        user_key(LakePaths.at("s3://bucket/lake"), environ={})


def test_without_a_variable_a_local_lake_keeps_its_own_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lake = LakePaths.at(tmp_path / "lake")
    first = user_key(lake, environ={})
    path = tmp_path / "lake" / "_secrets" / "user_key"
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first.hex() + "\n"
    assert "production should set FEEDBACK_USER_KEY" in caplog.text
    assert user_key(lake, environ={}) == first  # later runs merge into the same sketches
    assert sorted(p.name for p in path.parent.iterdir()) == ["user_key"]  # no draft left behind
    assert user_key(LakePaths.at(str(tmp_path / "other")), environ={}) != first  # one key per lake
