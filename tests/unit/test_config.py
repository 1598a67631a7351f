"""runstream.proto.config: the shared names, parsers and checks every *Config uses."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from runstream.proto import config
from runstream.proto.errors import ConfigError


def test_home_and_defaults_follow_runstream_home(tmp_path: Path) -> None:
    env = {"RUNSTREAM_HOME": str(tmp_path)}
    assert config.default_spool_dir(env) == tmp_path / "spool"
    assert config.default_clickhouse_dsn(env) == "chdb://" + str(tmp_path / "chdb")


@pytest.mark.parametrize("value", ["nohost", ":9092", "h:port", "h:70000"])
def test_bad_host_port_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="RUNSTREAM_KAFKA"):
        config.parse_bootstrap("RUNSTREAM_KAFKA", value)


def test_bootstrap_list() -> None:
    assert config.parse_bootstrap("X", "a:1, b:2") == ["a:1", "b:2"]


@pytest.mark.parametrize("value", ["chdb://relative", "postgres://x", ""])
def test_bad_dsn(value: str) -> None:
    with pytest.raises(ConfigError, match="RUNSTREAM_CLICKHOUSE"):
        config.check_dsn("RUNSTREAM_CLICKHOUSE", value)


def test_choice_and_float() -> None:
    assert config.check_choice("E", "avro", config.ENCODINGS) == "avro"
    with pytest.raises(ConfigError, match="E='json'"):
        config.check_choice("E", "json", config.ENCODINGS)
    assert config.env_float({}, "F", 1.5) == 1.5
    with pytest.raises(ConfigError, match="F='x'"):
        config.env_float({"F": "x"}, "F", 1.5)


@pytest.mark.parametrize("topic", [".", "..", "a b", "", "x" * 250, "t/1"])
def test_one_topic_rule_for_every_component(topic: str, tmp_path: Path) -> None:
    from runstream.config import ProducerConfig
    from runstream.consumer.config import ConsumerConfig

    for cls in (ProducerConfig, ConsumerConfig):
        default = cls.from_env({"RUNSTREAM_HOME": str(tmp_path)})
        with pytest.raises(ConfigError, match="RUNSTREAM_TOPIC"):
            dataclasses.replace(default, topic=topic)  # type: ignore[type-var]


def test_checks_name_the_setting_and_the_value() -> None:
    assert config.check_positive("P", 2) == 2.0
    assert config.check_non_negative("N", 0) == 0.0
    assert config.check_int_range("I", 3, 1, 16) == 3
    for check, value in ((config.check_positive, 0), (config.check_positive, math.nan),
                         (config.check_non_negative, -1.0), (config.check_non_negative, math.inf),
                         (config.check_positive, True)):
        with pytest.raises(ConfigError, match=r"X="):
            check("X", value)
    with pytest.raises(ConfigError, match=r"W=17: expected an integer 1\.\.16"):
        config.check_int_range("W", 17, 1, 16)
    with pytest.raises(ConfigError, match="D='a`b'"):
        config.check_database("D", "a`b")
    with pytest.raises(ConfigError, match="must be set together"):
        config.check_tls_files("C", "cert.pem", "K", "")
