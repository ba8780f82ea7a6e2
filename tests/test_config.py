from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from feedback.config import AppConfig, ConfigError, IngestConfig, SparkConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_conf_default_yaml_equals_builtin_defaults() -> None:
    assert load_config(ROOT / "conf" / "default.yaml") == AppConfig()


@pytest.mark.parametrize("path", sorted((ROOT / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_in_conf_loads(path: Path) -> None:
    assert type(load_config(path)) is AppConfig


def test_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"ingest": {"max_files_per_trigger": 3}, "spark": {"master": "local[2]"}}))
    config = load_config(conf)
    assert config.ingest.max_files_per_trigger == 3
    assert config.spark.master == "local[2]"
    assert config.ingest.validation == AppConfig().ingest.validation
    assert config.simulation == AppConfig().simulation


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"ingest": {"max_files_per_trigger": 0}}, "ingest.max_files_per_trigger: must be >= 1, got 0"),
        ({"ingest": {"max_files_per_trigger": "many"}}, "ingest.max_files_per_trigger: must be an integer, got 'many'"),
        ({"ingest": {"validation": {"enabled": "yes"}}}, "ingest.validation.enabled: must be a boolean, got 'yes'"),
        ({"ingest": {"max_file_per_trigger": 3}}, "ingest.max_file_per_trigger: unknown key"),
        ({"spark": {"log_level": "LOUD"}}, "spark.log_level: must be one of"),
        ({"spark": {"driver_memory": "4 GB"}}, "spark.driver_memory: must be a JVM size such as 4g or 512m, got '4 GB'"),
        ({"rephrase_model": {"evidence_version": 3}}, "rephrase_model.evidence_version: must be 1 or 2, got 3"),
        ({"simulation": {"duplicate_rate": 1.5}}, "simulation.duplicate_rate: must be in [0, 1], got 1.5"),
        ({"simulation": {"start_date": "someday"}}, "simulation.start_date: must be an ISO date"),
        ({"sparks": {}}, "sparks: unknown key"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, document: dict[str, object], message: str) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_config(conf)
    assert str(caught.value).startswith(message)


def test_missing_conf_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_dataclasses_validate_when_built_in_code() -> None:
    with pytest.raises(ConfigError, match="spark.shuffle_partitions: must be >= 1, got 0"):
        SparkConfig(shuffle_partitions=0)
    with pytest.raises(ConfigError, match="ingest.file_glob: must be non-empty"):
        IngestConfig(file_glob=" ")
