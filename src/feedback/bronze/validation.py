"""The Great Expectations gate of each bronze micro-batch, run before anything is written.

``parse_events`` enforces contract v1 row by row. This suite judges the batch as a whole, which
no row rule can: the share of its lines quarantined, how stale its events are, the share of
nulls in optional fields, how many users it holds, plus the contract's sets and ranges stated
declaratively by a tool analysts know. It runs on ``batch_profile`` (one narrow row per line)
before the batch is written, so a failing batch can be quarantined whole or stop the stream
before any commit; its results are kept in ``_ops/validation/bronze_interactions``. GX has no
streaming API, so it runs on the static ``batch_df`` inside ``foreachBatch``; the DataFrame is
already materialised, so the data source is told not to persist it again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import great_expectations as gx
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from feedback.config import ValidationConfig
from feedback.core.schema import (
    EXPLICIT_FEEDBACK,
    MAX_EVENT_ID_LENGTH,
    MAX_UTTERANCE_LENGTH,
    RESPONSE_TYPES,
    SCHEMA_VERSION,
    STATUSES,
)

LOG = logging.getLogger("feedback.bronze.validation")

SUITE_NAME = "bronze_interactions_v1"



def batch_profile(parsed: DataFrame, config: ValidationConfig) -> DataFrame:
    """One narrow row per line of a ``parse_events`` output: what the gate's expectations read.

    ``is_quarantined`` is set for every line; the other columns only for valid events (null for
    rejected lines, which GX's means, sets and ranges skip). ``is_stale``: the event is older
    than ``stale_after_hours`` at its file's landing time (``landed_at``).
    """
    missing = {"reasons", "ts", "landed_at"} - set(parsed.columns)
    if missing:
        raise ValueError(f"parsed is missing column(s) {sorted(missing)}")
    valid = F.size("reasons") == 0

    def of_valid(column: Column) -> Column:
        return F.when(valid, column)

    stale_before = F.col("landed_at") - F.make_dt_interval(secs=F.lit(float(config.stale_after_hours) * 3600.0))
    return parsed.select(
        (~valid).cast("int").alias("is_quarantined"),
        of_valid((F.col("ts") < stale_before).cast("int")).alias("is_stale"),
        *[of_valid(F.col(name).isNull().cast("int")).alias(f"is_null_{name}") for name in config.null_checked_fields],
        *[of_valid(F.col(name)).alias(name) for name in _PROFILED_FIELDS],
    )


_PROFILED_FIELDS = (
    "event_id",
    "user_id",
    "utterance",
    "schema_version",
    "status",
    "response_type",
    "explicit_feedback",
    "asr_confidence",
    "nlu_confidence",
    "response_latency_ms",
    "response_duration_ms",
)


def bronze_expectations(config: ValidationConfig) -> list[gxe.Expectation]:
    """The gate over ``batch_profile``: batch-level shares and counts, then contract v1's sets and ranges."""
    return [
        gxe.ExpectColumnMeanToBeBetween(column="is_quarantined", min_value=0.0, max_value=config.max_quarantine_share),
        gxe.ExpectColumnMeanToBeBetween(column="is_stale", min_value=0.0, max_value=config.max_stale_share),
        *[
            gxe.ExpectColumnMeanToBeBetween(column=f"is_null_{name}", min_value=0.0, max_value=config.max_null_share)
            for name in config.null_checked_fields
        ],
        gxe.ExpectColumnUniqueValueCountToBeBetween(column="user_id", min_value=config.min_distinct_users),
        gxe.ExpectColumnValueLengthsToBeBetween(column="event_id", min_value=1, max_value=MAX_EVENT_ID_LENGTH),
        gxe.ExpectColumnValueLengthsToBeBetween(column="utterance", min_value=1, max_value=MAX_UTTERANCE_LENGTH),
        gxe.ExpectColumnValuesToBeInSet(column="schema_version", value_set=[SCHEMA_VERSION]),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
        gxe.ExpectColumnValuesToBeInSet(column="response_type", value_set=list(RESPONSE_TYPES)),
        gxe.ExpectColumnValuesToBeInSet(column="explicit_feedback", value_set=list(EXPLICIT_FEEDBACK)),
        gxe.ExpectColumnValuesToBeBetween(column="asr_confidence", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="nlu_confidence", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="response_latency_ms", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="response_duration_ms", min_value=0),
    ]


@dataclass(frozen=True)
class ValidationOutcome:
    """What one GX run said about one batch."""

    batch_id: int
    success: bool
    evaluated: int
    successful: int
    failed_expectations: tuple[str, ...]
    seconds: float
    result_json: str


def _describe(result: object) -> str:
    config = result.expectation_config  # type: ignore[attr-defined]
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else str(config.type)


class BatchValidator:
    """Builds the GX context, suite and validation definition once; validates batches."""

    def __init__(self, config: ValidationConfig, data_source_name: str = "bronze_batches") -> None:
        if not isinstance(config, ValidationConfig):
            raise TypeError(f"config must be a ValidationConfig, got {type(config).__name__}")
        self.config = config
        self.stops_the_stream = config.on_failure == "stop"
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_spark(name=data_source_name, persist=False)
        batch_definition = source.add_dataframe_asset(name="micro_batch").add_batch_definition_whole_dataframe(
            "whole_batch"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
        for expectation in bronze_expectations(config):
            suite.add_expectation(expectation)
        self._definition = context.validation_definitions.add(
            gx.ValidationDefinition(data=batch_definition, suite=suite, name=f"{SUITE_NAME}_definition")
        )

    def should_validate(self, batch_id: int) -> bool:
        return batch_id % self.config.every_n_batches == 0

    def validate(self, frame: DataFrame, batch_id: int) -> ValidationOutcome | None:
        """Run the suite on ``frame`` (a ``batch_profile``); None when this batch is not sampled (``every_n_batches``)."""
        if not self.should_validate(batch_id):
            return None
        started = time.perf_counter()
        first_format = "BOOLEAN_ONLY" if self.config.boolean_first else self.config.result_format
        result = self._definition.run(batch_parameters={"dataframe": frame}, result_format=first_format)
        if not result.success and first_format != self.config.result_format:
            result = self._definition.run(batch_parameters={"dataframe": frame}, result_format=self.config.result_format)
        elapsed = time.perf_counter() - started
        failed = tuple(sorted(_describe(r) for r in result.results if not r.success))
        statistics = result.statistics
        outcome = ValidationOutcome(
            batch_id=batch_id,
            success=bool(result.success),
            evaluated=int(statistics.get("evaluated_expectations", len(result.results))),
            successful=int(statistics.get("successful_expectations", len(result.results) - len(failed))),
            failed_expectations=failed,
            seconds=elapsed,
            result_json=json.dumps(result.to_json_dict(), sort_keys=True, default=str),
        )
        if not outcome.success:
            LOG.warning("batch %d failed expectations: %s", batch_id, ", ".join(failed))
        return outcome
