"""The local Kafka broker's configuration and the pinned jars it runs from (no broker started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback.core.jars import KAFKA_CONNECTOR_JARS, SPARK_JARS, broker_jars
from feedback.ops.kafka import server_properties


def test_server_properties_make_a_one_node_kraft_cluster_on_loopback() -> None:
    text = server_properties(Path("/k/data"), 9092, 9093)
    settings = dict(line.split("=", 1) for line in text.splitlines())
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert settings["log.dirs"] == "/k/data"
    single = [key for key in settings if key.endswith(("replication.factor", "min.isr"))]
    assert sorted(single) == [
        "offsets.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "transaction.state.log.min.isr",
        "transaction.state.log.replication.factor",
    ]
    assert {settings[key] for key in single} == {"1"}


@pytest.mark.parametrize(("port", "controller_port", "message"), [(0, 9093, "port"), (9092, 70000, "controller_port"), (9092, 9092, "differ")])
def test_server_properties_refuse_bad_ports(port: int, controller_port: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        server_properties(Path("/k/data"), port, controller_port)


def test_the_broker_and_connector_jars_are_pinned() -> None:
    broker = broker_jars()
    assert len(broker) == 46
    names = {jar.file_name for jar in broker}
    assert {"kafka_2.13-4.1.1.jar", "kafka-clients-4.1.1.jar", "slf4j-simple-1.7.36.jar"} <= names
    assert all(len(jar.sha1) == 40 for jar in broker)
    # Spark's connector brings its own kafka-clients, older than the broker's: two class paths.
    assert [jar.file_name for jar in KAFKA_CONNECTOR_JARS] == [
        "spark-sql-kafka-0-10_2.13-4.1.1.jar",
        "spark-token-provider-kafka-0-10_2.13-4.1.1.jar",
        "kafka-clients-3.9.1.jar",
        "commons-pool2-2.12.1.jar",
    ]
    assert SPARK_JARS[-4:] == KAFKA_CONNECTOR_JARS


def test_feedback_kafka_parses_up_and_down_with_their_defaults() -> None:
    from feedback.cli import build_parser

    up = build_parser().parse_args(["kafka", "up", "--port", "19092"])
    assert (up.command, up.kafka_command, up.root, up.port, up.controller_port) == ("kafka", "up", Path(".kafka"), 19092, 0)
    down = build_parser().parse_args(["kafka", "down", "--root", "/tmp/broker"])
    assert (down.kafka_command, down.root) == ("down", Path("/tmp/broker"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["kafka"])
