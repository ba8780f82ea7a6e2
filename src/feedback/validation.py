"""Great Expectations checks of each validated micro-batch before it lands in bronze.

``parse_events`` already enforces contract v1 row by row; this suite is the independent,
declarative statement of the same contract over a whole batch (uniqueness, sets, ranges), run
by a tool analysts know, with its results kept in ``_ops/validation/bronze_interactions`` so
a bad producer shows up in a table rather than in a log line. GX has no streaming API, so it
runs on the static ``batch_df`` inside ``foreachBatch``; the DataFrame is already cached, so
the data source is told not to persist it again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import great_expectations as gx
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from pyspark.sql import DataFrame
from pyspark.sql.types import BooleanType, LongType, StringType, StructField, StructType, TimestampType

from feedback.config import ValidationConfig
from feedback.schema import (
    EXPLICIT_FEEDBACK,
    MAX_EVENT_ID_LENGTH,
    MAX_UTTERANCE_LENGTH,
    RESPONSE_TYPES,
    SCHEMA_VERSION,
    STATUSES,
)

LOG = logging.getLogger("feedback.validation")

SUITE_NAME = "bronze_interactions_v1"

VALIDATION_RESULTS_SCHEMA = StructType(
    [
        StructField("app_id", StringType(), False),
        StructField("batch_id", LongType(), False),
        StructField("validated_at", TimestampType(), False),
        StructField("suite", StringType(), False),
        StructField("success", BooleanType(), False),
        StructField("evaluated_expectations", LongType(), False),
        StructField("successful_expectations", LongType(), False),
        StructField("failed_expectations", StringType(), False),
        StructField("result_json", StringType(), False),
    ]
)


def bronze_expectations() -> list[gxe.Expectation]:
    """The contract-v1 suite over validated, deduplicated events."""
    required = ("event_id", "schema_version", "ts", "event_date", "user_id", "device_id", "utterance", "status")
    return [
        *[gxe.ExpectColumnValuesToNotBeNull(column=name) for name in required],
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
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
        self.fail_on_error = config.fail_on_error
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_spark(name=data_source_name, persist=False)
        batch_definition = source.add_dataframe_asset(name="micro_batch").add_batch_definition_whole_dataframe(
            "whole_batch"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
        for expectation in bronze_expectations():
            suite.add_expectation(expectation)
        self._definition = context.validation_definitions.add(
            gx.ValidationDefinition(data=batch_definition, suite=suite, name=f"{SUITE_NAME}_definition")
        )

    def should_validate(self, batch_id: int) -> bool:
        return batch_id % self.config.every_n_batches == 0

    def validate(self, frame: DataFrame, batch_id: int) -> ValidationOutcome | None:
        """Run the suite on ``frame``; None when this batch is not sampled (``every_n_batches``)."""
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
