"""Hand-written bronze rows for the sessionization and detection tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from feedback.silver.sessionize import TURN_FIELDS

DAY = dt.datetime(2026, 11, 2)

EVENT_COLUMNS = (
    "user_id string, device_id string, ts timestamp, event_id string, event_date date, device_type string, "
    "locale string, utterance string, domain string, intent string, slots map<string,string>, status string, "
    "response_type string, response_text string, response_latency_ms int, response_duration_ms int, "
    "asr_confidence double, nlu_confidence double, explicit_feedback string"
)


@dataclass(frozen=True)
class Event:
    """One request as bronze holds it; times in seconds after 10:00 of ``DAY``."""

    event_id: str
    at_s: float
    utterance: str
    status: str = "success"
    response_type: str = "speech"
    latency_ms: int | None = 500
    duration_ms: int | None = 3000
    domain: str | None = "weather"
    intent: str | None = "GetWeather"
    user_id: str = "u1"
    device_id: str = "d1"
    feedback: str | None = None
    day: dt.datetime = DAY

    def row(self) -> tuple[object, ...]:
        ts = self.day + dt.timedelta(hours=10, seconds=self.at_s)
        return (
            self.user_id, self.device_id, ts, self.event_id, ts.date(), "speaker", "en-US", self.utterance,
            self.domain, self.intent, None, self.status, self.response_type, None, self.latency_ms,
            self.duration_ms, 0.9, 0.9, self.feedback,
        )


def stop(event_id: str, at_s: float, utterance: str = "stop", **kwargs: object) -> Event:
    return Event(event_id, at_s, utterance, domain="system", intent="Stop", duration_ms=0, **kwargs)  # type: ignore[arg-type]


def events_frame(spark: SparkSession, events: list[Event]) -> DataFrame:
    frame = spark.createDataFrame([e.row() for e in events], EVENT_COLUMNS)
    return frame.select("user_id", "device_id", *TURN_FIELDS)
