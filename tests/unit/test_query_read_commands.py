"""Formatting of the CLI read commands, and the query server's configuration: no network."""

from __future__ import annotations

import json
import math
from typing import Any, cast

import pytest

from runstream.cli import metrics, output, runs
from runstream.proto.errors import ConfigError, NotFoundError
from runstream.query.config import QueryConfig
from runstream.query.models import MetricHistory, MetricSummary, Param, RankInfo, Run, RunInfo

T0 = 1_700_000_000_000


def info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(run_id="r1", experiment="exp", name="resnet",
                                   status="FINISHED", start_ms=T0, end_ms=T0 + 3_723_000,
                                   world_size=8)
    base.update(kw)
    return RunInfo(**cast(Any, base))


def test_times_and_durations() -> None:
    assert output.format_time_ms(T0) == "2023-11-14 22:13:20"
    assert output.format_time_ms(0) == "-"
    assert [output.format_duration_s(s) for s in (0, 59, 61, 3723, 90000, -1)] == [
        "0s", "59s", "1m01s", "1h02m", "1d01h", "-",
    ]
    assert output.run_duration(info(), 0) == "1h02m"
    assert output.run_duration(info(end_ms=0, status="RUNNING"), T0 + 5000) == "5s+"
    assert output.format_value(0.1234567) == "0.123457" and output.format_value(math.nan) == "nan"


def test_table_columns_align() -> None:
    text = output.format_table(["A", "NUM"], [("x", 1), ("longer", 12345)], right=(1,))
    assert text.splitlines() == ["A         NUM", "x           1", "longer  12345"]
    assert output.clip("a\nb" + "c" * 100, 10) == "a bcccccc…"


def test_runs_table_has_every_column() -> None:
    text = runs.runs_table([info(), info(run_id="r2", name="", status="RUNNING", end_ms=0)],
                         now_ms=T0 + 1000)
    header, first, second = text.splitlines()
    assert header.split() == ["RUN", "ID", "EXPERIMENT", "NAME", "STATUS", "RANKS", "STARTED",
                              "(UTC)", "DURATION"]
    assert first.split() == ["r1", "exp", "resnet", "FINISHED", "8", "2023-11-14", "22:13:20",
                             "1h02m"]
    assert second.split()[2:4] == ["-", "RUNNING"] and second.endswith("1s+")


def test_show_text_has_every_section() -> None:
    run = Run(
        info=info(),
        params=(Param(key="lr", value="0.01", type="FLOAT"),),
        metrics=(MetricSummary(key="loss", last=0.5, last_step=99, min=0.4, max=2.0),),
        ranks=(RankInfo(rank=0, local_rank=0, node="n0", status="FINISHED", start_ms=T0,
                        end_ms=T0 + 1, error="Traceback\nValueError: boom"),),
    )
    text = runs.run_text(run, T0)
    for title in ("Params", "Tags", "Metrics", "Ranks", "Artifacts", "Inputs", "Code"):
        assert f"\n{title}\n" in text
    assert "(none)" in text and "ValueError: boom" in text and "0.01" in text


def test_json_keeps_non_finite_values_readable() -> None:
    history = MetricHistory(run_id="r", key="k", ranks=[0], steps=[1], values=[math.inf],
                            ts_ms=[T0])
    assert json.loads(output.to_json(history))["values"] == ["inf"]
    assert json.loads(output.to_json([info()]))[0]["world_size"] == 8


class _FakeClient:
    def __init__(self, runs: list[RunInfo]) -> None:
        self.runs = runs

    def iter_runs(self, experiment: str | None, page_size: int = 100) -> object:
        return iter(self.runs)

    def get_run(self, run_id: str) -> Run:
        raise NotFoundError(f"run {run_id!r} not found")

    def metric_history(self, run_id: str, key: str, ranks: object = None,
                       page_size: int = 0, page_token: str | None = None) -> MetricHistory:
        return MetricHistory(run_id=run_id, key=key, ranks=[0, 1], steps=[1, 1],
                             values=[0.5, 0.25], ts_ms=[T0, T0], next_page_token="t")


def test_commands_print_and_return_status(capsys: pytest.CaptureFixture[str]) -> None:
    client: Any = _FakeClient([info(run_id=f"r{i}") for i in range(5)])
    assert runs.cmd_runs(client, None, 2, True) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r0", "r1"]
    assert runs.cmd_show(client, "zz", False) == 1
    assert "runstream: error: run 'zz' not found" in capsys.readouterr().err
    assert metrics.cmd_history(client, "r", "loss", None, 10, False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RANK", "STEP", "VALUE", "TIME", "(UTC)"] and len(lines) == 3


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
