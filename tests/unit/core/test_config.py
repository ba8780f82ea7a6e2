from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from feedback.config import AppConfig, ConfigError, IngestConfig, MaintenanceConfig, MiningConfig, SparkConfig, load_config

from support.paths import REPO as ROOT


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
        ({"rephrase_model": {"text_version": 0}}, "rephrase_model.text_version: must be 1 or 2, got 0"),
        ({"rephrase_model": {"cascade_scope": "session"}}, "rephrase_model.cascade_scope: must be pair or request, got 'session'"),
        ({"rephrase_model": {"fp32_ffn_output_layers": -1}}, "rephrase_model.fp32_ffn_output_layers: must be >= 0, got -1"),
        ({"rephrase_model": {"train_corpora": []}}, "rephrase_model.train_corpora: must name one or more of ('snips', 'sgd'), each once, got ()"),
        ({"rephrase_model": {"eval_corpora": ["sgd", "sgd"]}}, "rephrase_model.eval_corpora: must name one or more of ('snips', 'sgd'), each once"),
        ({"rephrase_model": {"train_corpora": ["atis"]}}, "rephrase_model.train_corpora: must name one or more of ('snips', 'sgd'), each once"),
        ({"simulation": {"duplicate_rate": 1.5}}, "simulation.duplicate_rate: must be in [0, 1], got 1.5"),
        ({"simulation": {"start_date": "someday"}}, "simulation.start_date: must be an ISO date"),
        ({"maintenance": {"vacuum_retention_hours": -1}}, "maintenance.vacuum_retention_hours: must be an integer >= 0, got -1"),
        ({"maintenance": {"vacuum_retention_hours": 1.5}}, "maintenance.vacuum_retention_hours: must be an integer, got 1.5"),
        ({"maintenance": {"optimize": "yes"}}, "maintenance.optimize: must be a boolean, got 'yes'"),
        ({"maintenance": {"retention_hours": 24}}, "maintenance.retention_hours: unknown key"),
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
    with pytest.raises(ConfigError, match=r"maintenance.vacuum_retention_hours: must be an integer >= 0, got -24$"):
        MaintenanceConfig(vacuum_retention_hours=-24)
    with pytest.raises(ConfigError, match=r"maintenance.vacuum_retention_hours: must be an integer >= 0, got True$"):
        MaintenanceConfig(vacuum_retention_hours=True)


def test_maintenance_defaults_to_delta_s_safety_retention_and_takes_zero(tmp_path: Path) -> None:
    assert AppConfig().maintenance == MaintenanceConfig(vacuum_retention_hours=168, optimize=True)
    conf = tmp_path / "c.yaml"
    conf.write_text("maintenance:\n  vacuum_retention_hours: 0\n  optimize: false\n")
    assert load_config(conf).maintenance == MaintenanceConfig(vacuum_retention_hours=0, optimize=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest:\n  trigger_interval: ten seconds\n", r"^ingest\.trigger_interval: must be like '10 seconds'"),
        ("ingest:\n  trigger_interval: 10 fortnights\n", r"^ingest\.trigger_interval: "),
        ("ingest:\n  trigger_interval: -5 seconds\n", r"^ingest\.trigger_interval: "),
        ("ingest:\n  max_file_age: 0 days\n", r"^ingest\.max_file_age: "),
        ("sessionize:\n  session_gap: 5min\n", r"^sessionize\.session_gap: "),
        ("sessionize:\n  watermark: 1.5 minutes\n", r"^sessionize\.watermark: "),
        ("detect:\n  rephrase_window_s: .inf\n", r"^detect\.rephrase_window_s: must be finite, got inf"),
        ("sessionize:\n  media_barge_in_window_s: .nan\n", r"^sessionize\.media_barge_in_window_s: must be finite"),
        ("ingest:\n  validation:\n    stale_after_hours: .inf\n", r"^ingest\.validation\.stale_after_hours: must be finite"),
        ("rephrase_model:\n  negatives_per_positive: '1e400'\n", r"^rephrase_model\.negatives_per_positive: must be finite"),
        ("rephrase_model:\n  learning_rate: fast\n", r"^rephrase_model\.learning_rate: must be a number, got 'fast'"),
        ("rephrase_model:\n  learning_rate: inf\n", r"^rephrase_model\.learning_rate: must be a number, got 'inf'"),
        ("rephrase_model:\n  epochs: 3e0\n", r"^rephrase_model\.epochs: must be an integer, got '3e0'"),
        ("rephrase_model:\n  epochs: 2.5\n", r"^rephrase_model\.epochs: must be an integer, got 2.5"),
        ("mining:\n  min_support_users: 1\n", r"^mining\.min_support_users: must be >= 2 .*, got 1$"),
    ],
    ids=lambda value: " ".join(value.split()) if value.endswith("\n") else "",
)
def test_bad_intervals_and_numbers_fail_at_load_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(conf)


def test_numbers_yaml_reads_as_strings_follow_the_field_type(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("rephrase_model:\n  learning_rate: 5e-5\n  epochs: '4'\n  negatives_per_positive: 2\n")
    model = load_config(conf).rephrase_model
    assert model.learning_rate == 5e-05 and type(model.learning_rate) is float
    assert model.epochs == 4 and type(model.epochs) is int
    assert model.negatives_per_positive == 2.0 and type(model.negatives_per_positive) is float


def test_every_spark_interval_form_loads(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "ingest:\n  trigger_interval: 0 seconds\n  max_file_age: 1 day\n"
        "sessionize:\n  session_gap: 1 minutes\n  watermark: 2 hours\n"
    )
    config = load_config(conf)
    assert (config.ingest.trigger_interval, config.sessionize.watermark) == ("0 seconds", "2 hours")
    with pytest.raises(ConfigError, match="sessionize.session_gap: must be like '5 minutes', got '0 minutes'"):
        load_config(overrides={"sessionize": {"session_gap": "0 minutes"}})


def test_min_support_users_refuses_a_single_user() -> None:
    with pytest.raises(ConfigError, match="mining.min_support_users: must be >= 2"):
        MiningConfig(min_support_users=1)
    assert MiningConfig(min_support_users=2, min_support_chains=1).min_support_chains == 1
