from __future__ import annotations

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
    assert config.env_choice({"E": "avro"}, "E", config.ENCODINGS, "protobuf") == "avro"
    with pytest.raises(ConfigError, match="E='json'"):
        config.env_choice({"E": "json"}, "E", config.ENCODINGS, "protobuf")
    assert config.env_float({}, "F", 1.5) == 1.5
    with pytest.raises(ConfigError, match="F='x'"):
        config.env_float({"F": "x"}, "F", 1.5)
