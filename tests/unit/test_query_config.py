"""QueryConfig and ClientConfig (runstream.query.config)."""

from __future__ import annotations

import pytest

from runstream.proto.errors import ConfigError
from runstream.query.config import QueryConfig


def test_query_config_from_env() -> None:
    config = QueryConfig.from_env({"RUNSTREAM_CLICKHOUSE": "chdb:///tmp/x",
                                   "RUNSTREAM_QUERY_ADDR": "0.0.0.0:0"})
    assert (config.addr, config.clickhouse_dsn, config.database) == (
        "0.0.0.0:0", "chdb:///tmp/x", "runstream")
    default = QueryConfig.from_env({"RUNSTREAM_HOME": "/srv/rs"})
    assert default.addr == "127.0.0.1:50051" and default.clickhouse_dsn == "chdb:///srv/rs/chdb"
    with pytest.raises(ConfigError, match="RUNSTREAM_QUERY_ADDR"):
        QueryConfig.from_env({"RUNSTREAM_QUERY_ADDR": "nohost"})
    with pytest.raises(ConfigError, match="RUNSTREAM_CLICKHOUSE"):
        QueryConfig.from_env({"RUNSTREAM_CLICKHOUSE": "mysql://x"})
    with pytest.raises(ConfigError, match="RUNSTREAM_CLICKHOUSE_DATABASE"):
        QueryConfig.from_env({"RUNSTREAM_CLICKHOUSE": "chdb:///x",
                              "RUNSTREAM_CLICKHOUSE_DATABASE": "a`b"})


def test_client_config_from_env_and_explicit() -> None:
    import dataclasses

    from runstream.query.config import ClientConfig

    config = ClientConfig.from_env({"RUNSTREAM_QUERY_ADDR": "h:1", "RUNSTREAM_TOKEN": "t"})
    assert (config.target, config.token, config.tls_ca, config.timeout_s) == ("h:1", "t", "", 30.0)
    assert ClientConfig.from_env({}).target == "127.0.0.1:50051"
    with pytest.raises(ConfigError, match="timeout_s"):
        dataclasses.replace(config, timeout_s=0)
    with pytest.raises(ConfigError, match="RUNSTREAM_QUERY_ADDR"):
        dataclasses.replace(config, target="")
