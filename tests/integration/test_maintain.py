"""``feedback maintain``: OPTIMIZE and VACUUM of every table of a lake, counted file by file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from feedback.cli import build_parser
from feedback.config import AppConfig, MaintenanceConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    BRONZE_CONSTRAINTS,
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    CHANGE_DATA_FEED,
    DEFECT_METRICS_SCHEMA,
    INGEST_BATCHES_SCHEMA,
    TABLE_COMMENTS,
)
from feedback.core.tables import ensure_table
from feedback.ops.maintain import LISTING_PARALLELISM, RETENTION_CHECK, MaintenanceReport, TableMaintenance, maintain_lake, run

from support.bronze_rows import bronze_frame, bronze_row

HOUR = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)
BRONZE_SKIPPED = "the silver stream reads its files whole and in event-time order"
ABSENT = (
    "quarantine/interactions",
    "_ops/landing_skipped",
    "_ops/validation/bronze_interactions",
    "silver/turns",
    "_ops/silver_batches",
    "_ops/silver_progress",
    "gold/utterance_defects",
    "gold/rephrase_pairs",
    "gold/failure_points",
    "gold/rewrites",
    "gold/rewrite_vetoes",
    "gold/nlu_annotations",
)


def data_files(path: str) -> int:
    """Parquet data files on disk under the table at ``path`` (the Delta log left out)."""
    return sum(1 for f in Path(path).rglob("*.parquet") if "_delta_log" not in f.parts)


def live_files(spark: SparkSession, path: str) -> int:
    """Files the table's latest version uses."""
    row = DeltaTable.forPath(spark, path).detail().first()
    assert row is not None
    return int(row["numFiles"])


def small_lake(spark: SparkSession, root: Path, *, bronze: bool) -> LakePaths:
    """A lake whose batch log and ``gold/defect_metrics`` got three one-file appends each, and
    (``bronze``) bronze two; every other table absent."""
    lake = LakePaths.at(root)
    ensure_table(spark, lake.ingest_batches, INGEST_BATCHES_SCHEMA, (), comment=TABLE_COMMENTS["ingest_batches"])
    ensure_table(spark, lake.defect_metrics, DEFECT_METRICS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["defect_metrics"])
    for batch in range(3):
        spark.createDataFrame(
            [("app", batch, HOUR, 1, 10, 9, 1, 0, 0, True, True, [], 0.5, 2.0, None)], INGEST_BATCHES_SCHEMA
        ).coalesce(1).write.format("delta").mode("append").save(lake.ingest_batches)
        spark.createDataFrame(
            [(HOUR + dt.timedelta(hours=batch), "music", "PlayMusic", "speaker", 4, 1, 1, 0, 0, 0.25)], DEFECT_METRICS_SCHEMA
        ).coalesce(1).write.format("delta").mode("append").save(lake.defect_metrics)
    if bronze:
        ensure_table(
            spark, lake.bronze, BRONZE_SCHEMA, BRONZE_PARTITION_COLUMNS, comment=TABLE_COMMENTS["bronze"], constraints=BRONZE_CONSTRAINTS
        )
        for index in range(2):
            bronze_frame(spark, [bronze_row(f"e{index}", index)]).coalesce(1).write.format("delta").mode("append").save(lake.bronze)
    return lake


def test_optimize_compacts_and_vacuum_zero_deletes_every_replaced_file(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    lake = small_lake(spark, tmp_path / "lake", bronze=True)
    assert [data_files(p) for p in (lake.bronze, lake.ingest_batches, lake.defect_metrics)] == [2, 3, 3]
    confs_before = [spark.conf.get(key, None) for key in (RETENTION_CHECK, LISTING_PARALLELISM)]

    config = replace_section(app_config, maintenance=MaintenanceConfig(vacuum_retention_hours=0, optimize=True))
    report = run(spark, config, lake)

    assert report == MaintenanceReport(
        lake=lake.root,
        retention_hours=0,
        tables=(
            TableMaintenance("bronze/interactions", None, None, 0, BRONZE_SKIPPED),
            TableMaintenance("_ops/ingest_batches", 3, 1, 3),
            TableMaintenance("gold/defect_metrics", 3, 1, 3),
        ),
        absent=ABSENT,
    )
    assert [live_files(spark, p) for p in (lake.bronze, lake.ingest_batches, lake.defect_metrics)] == [2, 1, 1]
    assert [data_files(p) for p in (lake.bronze, lake.ingest_batches, lake.defect_metrics)] == [2, 1, 1]
    assert spark.read.format("delta").load(lake.ingest_batches).count() == 3
    assert spark.read.format("delta").load(lake.defect_metrics).count() == 3
    # The retention check is turned off, and the listing parallelism set, for the VACUUM only.
    assert [spark.conf.get(key, None) for key in (RETENTION_CHECK, LISTING_PARALLELISM)] == confs_before


def test_the_default_retention_keeps_the_replaced_files(spark: SparkSession, tmp_path: Path) -> None:
    lake = small_lake(spark, tmp_path / "lake", bronze=False)
    report = maintain_lake(spark, lake, MaintenanceConfig())
    assert report.tables == (
        TableMaintenance("_ops/ingest_batches", 3, 1, 0),
        TableMaintenance("gold/defect_metrics", 3, 1, 0),
    )
    assert [live_files(spark, p) for p in (lake.ingest_batches, lake.defect_metrics)] == [1, 1]
    assert [data_files(p) for p in (lake.ingest_batches, lake.defect_metrics)] == [4, 4]  # time travel still reads them
    old = spark.read.format("delta").option("versionAsOf", 3).load(lake.ingest_batches)
    assert sorted(r["batch_id"] for r in old.collect()) == [0, 1, 2]


def test_optimize_off_vacuums_only(spark: SparkSession, tmp_path: Path) -> None:
    lake = small_lake(spark, tmp_path / "lake", bronze=False)
    report = maintain_lake(spark, lake, MaintenanceConfig(vacuum_retention_hours=0, optimize=False))
    assert report.tables == (
        TableMaintenance("_ops/ingest_batches", None, None, 0, "maintenance.optimize is false"),
        TableMaintenance("gold/defect_metrics", None, None, 0, "maintenance.optimize is false"),
    )
    assert [data_files(p) for p in (lake.ingest_batches, lake.defect_metrics)] == [3, 3]


def test_the_report_says_what_was_done_per_table() -> None:
    report = MaintenanceReport(
        lake="/data/lake",
        retention_hours=24,
        tables=(
            TableMaintenance("bronze/interactions", None, None, 2, BRONZE_SKIPPED),
            TableMaintenance("gold/defect_metrics", 12, 1, 30),
        ),
        absent=("gold/rewrites",),
    )
    assert report.render() == (
        "maintenance of /data/lake (VACUUM retention 24 hours, Delta's retention check off)\n"
        "  bronze/interactions: OPTIMIZE skipped (the silver stream reads its files whole and in event-time order); "
        "VACUUM deleted 2 files\n"
        "  gold/defect_metrics: OPTIMIZE removed 12 files, added 1; VACUUM deleted 30 files\n"
        "  not created yet: gold/rewrites"
    )
    assert MaintenanceReport("/l", 168, (), ()).render() == "maintenance of /l (VACUUM retention 168 hours)"


def test_the_cli_parses_maintain() -> None:
    args = build_parser().parse_args(["maintain", "--lake", "lake", "--conf", "conf/cluster.yaml"])
    assert (args.command, args.lake, args.conf) == ("maintain", Path("lake"), Path("conf/cluster.yaml"))
