"""The JVM jars: Delta's and Spark's Kafka connector for Spark, and a Kafka broker; fetched once from Maven Central.

``configure_spark_with_delta_pip`` only sets ``spark.jars.packages``, which makes every
session resolve through Ivy over the network. Here ``make setup`` downloads the jars Spark
needs (checked against pinned SHA-1 sums) and every later session points ``spark.jars`` at
the files, so runs are offline and start faster. The broker's jars (``feedback kafka up``)
are pinned the same way in ``resources/kafka-broker.lock`` and kept apart: the broker runs in
its own JVM, with a newer ``kafka-clients`` than the connector's.

Run ``python -m feedback.core.jars [DIR]`` to fill the caches.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
DELTA_VERSION = "4.4.0"
SPARK_BINARY_VERSION = "4.1"
SCALA_BINARY_VERSION = "2.13"


@dataclass(frozen=True)
class MavenJar:
    """One artifact of Maven Central with the SHA-1 it must have."""

    group: str
    artifact: str
    version: str
    sha1: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def url(self) -> str:
        return f"{MAVEN_CENTRAL}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"


DELTA_JARS: tuple[MavenJar, ...] = (
    MavenJar(
        "io.delta",
        f"delta-spark_{SPARK_BINARY_VERSION}_{SCALA_BINARY_VERSION}",
        DELTA_VERSION,
        "4861648f070c9596e0c5823c55921de365dce4d0",
    ),
    MavenJar("io.delta", "delta-storage", DELTA_VERSION, "a068e489ce20d7f79bc4ca2d3392f12adbb69ddd"),
)


KAFKA_CONNECTOR_VERSION = "4.1.1"
"""Spark's Kafka connector. In the 4.1 line only 4.1.1 of its token provider is on Maven Central;
it works with pyspark 4.1.x (the connector talks to the broker through ``kafka-clients`` 3.9.1)."""

KAFKA_CONNECTOR_JARS: tuple[MavenJar, ...] = (
    MavenJar(
        "org.apache.spark",
        f"spark-sql-kafka-0-10_{SCALA_BINARY_VERSION}",
        KAFKA_CONNECTOR_VERSION,
        "c50b14bea834ac7f2c8241b05bd40f92d07d1c44",
    ),
    MavenJar(
        "org.apache.spark",
        f"spark-token-provider-kafka-0-10_{SCALA_BINARY_VERSION}",
        KAFKA_CONNECTOR_VERSION,
        "1274a38fc9b913ab15b5d0c22496932a83a2b7ab",
    ),
    MavenJar("org.apache.kafka", "kafka-clients", "3.9.1", "86ca079953ed5606257ff298c24666b26da6985b"),
    MavenJar("org.apache.commons", "commons-pool2", "2.12.1", "e5c7b6c9f5a4b59be2bba213fbec70b413376fc1"),
)

SPARK_JARS: tuple[MavenJar, ...] = DELTA_JARS + KAFKA_CONNECTOR_JARS
"""Every jar a session loads through ``spark.jars``."""


def broker_jars() -> tuple[MavenJar, ...]:
    """The pinned jars of the Kafka broker (``resources/kafka-broker.lock``)."""
    text = importlib.resources.files("feedback.resources").joinpath("kafka-broker.lock").read_text(encoding="utf-8")
    jars = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        coordinate, sha1 = line.split()
        group, artifact, version = coordinate.split(":")
        jars.append(MavenJar(group, artifact, version, sha1))
    return tuple(jars)


def default_jars_dir() -> Path:
    """``$FEEDBACK_JARS_DIR``, else ``<project>/.cache/jars`` (the checkout holding this package)."""
    env = os.environ.get("FEEDBACK_JARS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".cache" / "jars"


def default_broker_dir() -> Path:
    """``$FEEDBACK_KAFKA_JARS_DIR``, else ``<project>/.cache/kafka-broker``."""
    env = os.environ.get("FEEDBACK_KAFKA_JARS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".cache" / "kafka-broker"


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def jar_paths(jars_dir: Path | None = None) -> list[Path]:
    """The cached jar files, in a fixed order.

    Raises:
        FileNotFoundError: a jar is missing; the message says to run ``make setup``.
    """
    return _cached(SPARK_JARS, jars_dir or default_jars_dir())


def broker_jar_paths(broker_dir: Path | None = None) -> list[Path]:
    """The cached broker jars (the broker's class path).

    Raises:
        FileNotFoundError: a jar is missing; the message says to run ``make setup``.
    """
    return _cached(broker_jars(), broker_dir or default_broker_dir())


def _cached(jars: tuple[MavenJar, ...], directory: Path) -> list[Path]:
    paths = [directory / jar.file_name for jar in jars]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"jars missing: {', '.join(missing)}. Run `make setup` (or `python -m feedback.core.jars`).")
    return paths


def fetch(jars: tuple[MavenJar, ...], directory: Path) -> list[Path]:
    """Download the jars not cached in ``directory`` yet and verify every checksum.

    Raises:
        ValueError: a downloaded or cached file does not match its pinned SHA-1 (it is removed).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for number, jar in enumerate(jars, start=1):
        target = directory / jar.file_name
        if not target.is_file():
            partial = target.with_suffix(".part")
            print(f"fetching [{number}/{len(jars)}] {jar.url}", file=sys.stderr)
            with urllib.request.urlopen(jar.url, timeout=120) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            partial.replace(target)
        actual = _sha1(target)
        if actual != jar.sha1:
            target.unlink()
            raise ValueError(f"{jar.file_name}: SHA-1 {actual} does not match the pinned {jar.sha1}; removed it")
    return _cached(jars, directory)


def fetch_jars(jars_dir: Path | None = None) -> list[Path]:
    """Download the jars Spark loads (Delta, the Kafka connector) into ``jars_dir``."""
    return fetch(SPARK_JARS, jars_dir or default_jars_dir())


def main(argv: list[str] | None = None) -> int:
    """Fill both caches: Spark's jars (``[DIR]``, else the default) and the broker's."""
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else None
    for path in fetch_jars(directory) + fetch(broker_jars(), default_broker_dir()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
