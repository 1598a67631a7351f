"""ConsumerConfig.from_env: defaults, overrides, and ConfigError naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstream.consumer.config import ConsumerConfig
from runstream.proto.errors import ConfigError


def test_defaults_follow_runstream_home(tmp_path: Path):
    cfg = ConsumerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path)})
    assert cfg.kafka_bootstrap == ()
    assert cfg.topic == "runstream.events"
    assert cfg.dlq_topic == "runstream.events.dlq"
    assert cfg.group_id == "runstream-consumer"
    assert cfg.clickhouse_dsn == "chdb://" + str((tmp_path / "chdb").resolve())
    assert cfg.database == "runstream"
    assert cfg.spool_dir == tmp_path / "spool"
    assert cfg.max_batch_rows == 200_000
    assert cfg.max_batch_age_s == 0.5
    assert cfg.writers == 2


def test_variables_override_defaults(tmp_path: Path):
    cfg = ConsumerConfig.from_env({
        "RUNSTREAM_KAFKA": "a:9092, b:9093",
        "RUNSTREAM_TOPIC": "my.events",
        "RUNSTREAM_CONSUMER_GROUP": "g1",
        "RUNSTREAM_CLICKHOUSE": "http://ch:8123",
        "RUNSTREAM_CLICKHOUSE_DATABASE": "rs_2",
        "RUNSTREAM_SPOOL_DIR": str(tmp_path),
        "RUNSTREAM_CONSUMER_MAX_BATCH_ROWS": "1000",
        "RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S": "2.5",
        "RUNSTREAM_CONSUMER_WRITERS": "3",
    })
    assert cfg.kafka_bootstrap == ("a:9092", "b:9093")
    assert (cfg.topic, cfg.dlq_topic, cfg.group_id) == ("my.events", "my.events.dlq", "g1")
    assert (cfg.clickhouse_dsn, cfg.database) == ("http://ch:8123", "rs_2")
    assert cfg.spool_dir == tmp_path
    assert (cfg.max_batch_rows, cfg.max_batch_age_s, cfg.writers) == (1000, 2.5, 3)


@pytest.mark.parametrize(("name", "value"), [
    ("RUNSTREAM_KAFKA", "no-port"),
    ("RUNSTREAM_TOPIC", "bad topic"),
    ("RUNSTREAM_CONSUMER_GROUP", "a/b"),
    ("RUNSTREAM_CLICKHOUSE", "chdb://relative"),
    ("RUNSTREAM_CLICKHOUSE", "mysql://x"),
    ("RUNSTREAM_CLICKHOUSE_DATABASE", "db; DROP TABLE x"),
    ("RUNSTREAM_CLICKHOUSE_DATABASE", "1abc"),
    ("RUNSTREAM_CONSUMER_MAX_BATCH_ROWS", "0"),
    ("RUNSTREAM_CONSUMER_MAX_BATCH_ROWS", "lots"),
    ("RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S", "-1"),
    ("RUNSTREAM_CONSUMER_WRITERS", "0"),
    ("RUNSTREAM_CONSUMER_WRITERS", "17"),
])
def test_malformed_values_name_the_variable(name: str, value: str, tmp_path: Path):
    with pytest.raises(ConfigError, match=name):
        ConsumerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path), name: value})


def test_config_is_frozen(tmp_path: Path):
    cfg = ConsumerConfig.from_env({"RUNSTREAM_HOME": str(tmp_path)})
    with pytest.raises(AttributeError):
        cfg.topic = "x"  # type: ignore[misc, unused-ignore]
