"""The Delta Lake JVM jars, fetched once from Maven Central into a local cache.

``configure_spark_with_delta_pip`` only sets ``spark.jars.packages``, which makes every
session resolve through Ivy over the network. Here ``make setup`` downloads the two jars
Delta needs (checked against pinned SHA-1 sums) and every later session points
``spark.jars`` at the files, so runs are offline and start faster.

Run ``python -m feedback.core.jars [DIR]`` to fill the cache.
"""

from __future__ import annotations

import hashlib
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


def default_jars_dir() -> Path:
    """``$FEEDBACK_JARS_DIR``, else ``<project>/.cache/jars`` (the checkout holding this package)."""
    env = os.environ.get("FEEDBACK_JARS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".cache" / "jars"


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
    directory = jars_dir or default_jars_dir()
    paths = [directory / jar.file_name for jar in DELTA_JARS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Delta jars missing: {', '.join(missing)}. Run `make setup` (or `python -m feedback.core.jars {directory}`)."
        )
    return paths


def fetch_jars(jars_dir: Path | None = None) -> list[Path]:
    """Download the Delta jars that are not cached yet and verify every checksum.

    Raises:
        ValueError: a downloaded or cached file does not match its pinned SHA-1.
    """
    directory = jars_dir or default_jars_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for jar in DELTA_JARS:
        target = directory / jar.file_name
        if not target.is_file():
            partial = target.with_suffix(".part")
            print(f"fetching {jar.url}", file=sys.stderr)
            with urllib.request.urlopen(jar.url, timeout=120) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            partial.replace(target)
        actual = _sha1(target)
        if actual != jar.sha1:
            target.unlink()
            raise ValueError(f"{jar.file_name}: SHA-1 {actual} does not match the pinned {jar.sha1}; removed it")
    return jar_paths(directory)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else None
    for path in fetch_jars(directory):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
