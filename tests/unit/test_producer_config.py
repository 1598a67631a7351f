"""ProducerConfig: variables, explicit values, and errors that name both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from runstream.config import ProducerConfig
from runstream.proto.errors import ConfigError


def test_config_from_env_and_explicit_override(tmp_path: Path):
    env = {
        "RUNSTREAM_HOME": str(tmp_path),
        "RUNSTREAM_KAFKA": "a:1, b:2",
        "RUNSTREAM_ENCODING": "avro",
        "RUNSTREAM_TOPIC": "t.events",
        "RUNSTREAM_RUN_ID": "r1",
    }
    cfg = ProducerConfig.from_env(env)
    assert cfg.kafka == "a:1,b:2"
    assert (cfg.encoding, cfg.topic, cfg.run_id) == ("avro", "t.events", "r1")
    assert cfg.spool_dir == tmp_path / "spool"
    assert cfg.artifacts_dir == tmp_path / "artifacts"
    cfg2 = dataclasses.replace(cfg, encoding="protobuf", spool_dir=tmp_path / "s", heartbeat_s=1)
    assert (cfg2.encoding, cfg2.spool_dir, cfg2.heartbeat_s) == ("protobuf", tmp_path / "s", 1.0)
    assert ProducerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path)}).kafka is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("RUNSTREAM_ENCODING", "json"), ("RUNSTREAM_KAFKA", "nohost"),
     ("RUNSTREAM_RUN_ID", "bad id!"), ("RUNSTREAM_TOPIC", "bad topic")],
)
def test_config_errors_name_the_variable_and_value(name, value):
    with pytest.raises(ConfigError) as e:
        ProducerConfig.from_env({name: value})
    assert name in str(e.value) and value in str(e.value)


@pytest.mark.parametrize(("field", "value", "name"), [
    ("heartbeat_s", 0, "RUNSTREAM_HEARTBEAT_S"),
    ("system_metrics_s", -1, "RUNSTREAM_SYSTEM_METRICS_S"),
    ("kafka", "nohost", "RUNSTREAM_KAFKA"), ("encoding", "json", "RUNSTREAM_ENCODING"),
    ("exit_flush_s", float("nan"), "RUNSTREAM_EXIT_FLUSH_S"),
    ("points_per_batch", 0, "points_per_batch"),
])
def test_explicit_values_are_checked_like_variables(field, value, name, tmp_path: Path):
    cfg = ProducerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match=name):
        dataclasses.replace(cfg, **{field: value})
    assert dataclasses.replace(cfg, kafka="a:1, b:2").kafka == "a:1,b:2"


def test_points_per_batch_within_the_consumers_key_and_point_limits(tmp_path: Path):
    from runstream.proto.validation import MAX_KEYS_PER_BATCH, MAX_POINTS_PER_BATCH

    assert MAX_KEYS_PER_BATCH <= MAX_POINTS_PER_BATCH
    ProducerConfig(spool_dir=tmp_path, artifacts_dir=tmp_path,
                   points_per_batch=MAX_KEYS_PER_BATCH)
    with pytest.raises(ConfigError, match="points_per_batch"):
        ProducerConfig(spool_dir=tmp_path, artifacts_dir=tmp_path,
                       points_per_batch=MAX_KEYS_PER_BATCH + 1)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("0", False), ("", False),
                                               (" 1 ", True)])
def test_resume_variable_is_one_or_zero(raw: str, expected: bool, tmp_path: Path):
    env = {"RUNSTREAM_HOME": str(tmp_path), "RUNSTREAM_RESUME": raw}
    assert ProducerConfig.from_env(env).resume is expected
    assert ProducerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path)}).resume is False


@pytest.mark.parametrize("raw", ["true", "yes", "2", "on", "-1"])
def test_a_malformed_resume_variable_names_itself_and_the_value(raw: str, tmp_path: Path):
    with pytest.raises(ConfigError) as e:
        ProducerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path), "RUNSTREAM_RESUME": raw})
    assert "RUNSTREAM_RESUME" in str(e.value) and repr(raw) in str(e.value)
