"""runstream.query.ranks (pure): what makes a rank a problem, and the suspects' order; the
service's GetRankHealth over a fake store; the repository's SQL names only the contract."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from runstream.proto import config as names
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.proto.status import UNSPECIFIED
from runstream.query import ranks
from runstream.query.attempts import StartRow, StatusEvent
from runstream.query.models import CodeVersion, Environment, FirstNonFinite, RankHealth
from runstream.query.ranks import Distribution, Thresholds, assemble, diagnose
from runstream.query.service import QueryService
from runstream.query.storage import RankRow

NOW = 1_760_000_000_000


def rank(r: int, p50: float = 0.1, **kw: Any) -> RankHealth:
    base: dict[str, Any] = dict(rank=r, node=f"n{r // 8}", status="RUNNING",
                                last_seen_ms=NOW - 1000, steps=100, step_time_p50_s=p50,
                                step_time_p95_s=p50 * 1.1)
    base.update(kw)
    return RankHealth(**base)


def report_of(rs: Sequence[RankHealth], **kw: Any) -> Any:
    return diagnose(rs, now_ms=NOW, **kw)


def test_healthy_ranks_have_no_problems_and_no_suspects() -> None:
    report = report_of([rank(0, 0.100), rank(1, 0.104), rank(2, 0.097), rank(3, 0.119)])
    assert report.suspects == ()
    assert all(r.problems == () for r in report.ranks)
    assert report.median_step_time_p50_s == pytest.approx(0.102)


def test_a_straggler_is_named_with_its_ratio_to_the_median_rank() -> None:
    report = report_of([rank(0, 0.1), rank(1, 0.131), rank(2, 0.1), rank(3, 0.1)])
    assert report.suspects == (1,)
    assert report.ranks[1].problems == ("step time p50 1.31x the median rank",)
    # At exactly the ratio: not a straggler. The ratio is configurable.
    assert report_of([rank(0, 0.1), rank(1, 0.12), rank(2, 0.1)]).suspects == ()
    strict = report_of([rank(0, 0.1), rank(1, 0.12), rank(2, 0.1)],
                       thresholds=Thresholds(straggler_ratio=1.1))
    assert strict.suspects == (1,)


def test_step_times_need_two_ranks_and_ranks_without_them_do_not_count() -> None:
    assert report_of([rank(0, 5.0)]).suspects == ()
    report = report_of([rank(0, 0.1), rank(1, 0.3), rank(2, 0.0, steps=0),
                        rank(3, 0.0, steps=0)])
    assert report.median_step_time_p50_s == pytest.approx(0.2)  # over ranks 0 and 1
    assert report.suspects == (1,)


def test_lag_far_above_the_median_rank() -> None:
    rs = [rank(0, lag_p50_ms=0.0), rank(1, lag_p50_ms=-2.0), rank(2, lag_p50_ms=1500.0),
          rank(3, lag_p50_ms=900.0)]
    report = report_of(rs, lag_ranks=[0, 1, 2, 3], lag_key="loss")
    # Median of the lag p50s: 450 ms; rank 2 is 1050 ms beyond it (> 1 s and > 3 steps).
    assert report.ranks[2].problems == ("lag p50 1050 ms behind the median rank",)
    assert report.suspects == (2,) and report.lag_key == "loss"
    # With 1 s steps, 3 steps' worth (3 s) is the bar.
    slow_steps = [rank(r.rank, 1.0, lag_p50_ms=r.lag_p50_ms) for r in rs]
    assert report_of(slow_steps, lag_ranks=[0, 1, 2, 3]).suspects == ()
    # No lag data: nothing to compare.
    assert report_of(rs).suspects == ()


def test_silence_while_running_failed_crashed_but_not_killed() -> None:
    rs = [
        rank(0, last_seen_ms=NOW - 120_000),
        rank(1, status="FAILED", last_seen_ms=NOW - 900_000),
        rank(2, status="CRASHED"),
        rank(3, status="KILLED", last_seen_ms=NOW - 900_000),
        rank(4, status="FINISHED", last_seen_ms=NOW - 900_000),
    ]
    report = report_of(rs, errors={1: "Traceback (most recent call last):\n  ...\n"
                                      "ValueError: boom\n", 2: ""})
    assert report.ranks[0].problems == ("no sign of life for 120 s",)
    assert report.ranks[1].problems == ("FAILED: ValueError: boom",)
    assert report.ranks[2].problems == ("CRASHED",)
    assert report.ranks[3].problems == () and report.ranks[4].problems == ()
    assert report.suspects == (0, 1, 2)
    assert report_of([rank(0, status="FAILED")], errors={0: "x" * 500}).ranks[0].problems[0] \
        == "FAILED: " + "x" * 199 + "…"
    assert report_of([rank(0, last_seen_ms=NOW - 30_000)],
                     thresholds=Thresholds(silent_s=10)).suspects == (0,)


@pytest.mark.parametrize(("firsts", "problem"), [
    ([("loss", 40, math.nan)], "NaN in loss at step 40"),
    ([("loss", 40, math.inf)], "inf in loss at step 40"),
    ([("grad", 3, -math.inf), ("loss", 40, math.nan)], "-inf in grad at step 3 (and 1 more key)"),
    ([("a", 1, math.nan), ("b", 1, math.nan), ("c", 2, math.inf)],
     "NaN in a at step 1 (and 2 more keys)"),
])
def test_the_first_non_finite_value(firsts: list[tuple[str, int, float]], problem: str) -> None:
    [health] = assemble(0, nodes={0: "n"}, statuses={0: "RUNNING"}, last_seen={0: NOW},
                        step_times={}, data_waits={}, device_memory={}, lags={},
                        non_finite={0: [FirstNonFinite(key=k, step=s, value=v)
                                        for k, s, v in reversed(firsts)]})
    assert [(f.key, f.step) for f in health.first_non_finite] == [(k, s) for k, s, _ in firsts]
    assert report_of([health]).ranks[0].problems == (problem,)


def test_suspects_slowest_first_then_most_behind_then_by_rank() -> None:
    rs = [rank(0, 0.1, status="FAILED"), rank(1, 0.5), rank(2, 0.1, status="CRASHED",
                                                            lag_p50_ms=5.0),
          rank(3, 0.1), rank(4, 0.3), rank(5, 0.0, steps=0, status="FAILED"),
          rank(6, 0.1, status="FAILED")]
    assert report_of(rs).suspects == (1, 4, 2, 0, 6, 5)


def test_assemble_fills_the_world_and_ignores_what_is_not_finite() -> None:
    out = assemble(
        4,
        nodes={0: "a", 1: "a", 2: "b"},
        statuses={0: "RUNNING", 1: "RUNNING", 2: "FAILED"},
        last_seen={0: NOW, 1: NOW, 2: NOW, 5: NOW},  # rank 5: beyond the world, still shown
        step_times={0: Distribution(count=10, p50=0.1, p95=0.2, max=0.3),
                    1: Distribution(count=0, p50=math.nan, p95=math.nan, max=math.nan)},
        data_waits={0: Distribution(count=9, p50=0.01, p95=0.02, max=0.05)},
        device_memory={0: Distribution(count=3, p50=1e9, p95=2e9, max=2.5e9)},
        lags={0: Distribution(count=10, p50=-1.0, p95=3.0, max=7.0)},
        non_finite={},
    )
    assert [r.rank for r in out] == [0, 1, 2, 3, 5]
    r0, r1, _, r3, _ = out
    assert (r0.steps, r0.step_time_p50_s, r0.step_time_p95_s) == (10, 0.1, 0.2)
    assert (r0.lag_p50_ms, r0.lag_p95_ms, r0.lag_max_ms) == (-1.0, 3.0, 7.0)
    assert (r0.data_wait_p50_s, r0.device_memory_max_bytes) == (0.01, 2_500_000_000)
    assert (r1.steps, r1.step_time_p50_s) == (0, 0.0)
    assert (r3.status, r3.node, r3.last_seen_ms) == (UNSPECIFIED, "", 0)
    assert report_of(out).ranks[3].problems == ("no data from this rank",)


# --- the service over a fake store -------------------------------------------------------


class FakeStore:
    """rank_rows/run_exists of RunRepository, the attempts' reads, and the RankHealthStore
    reads."""

    def __init__(self, *, stats: dict[tuple[int, str], Distribution] | None = None,
                 busiest: str = "loss", known: bool = True) -> None:
        self.known = known
        self.stats = stats or {}
        self.busiest = busiest
        self.lag_keys: list[str] = []

    def rank_rows(self, run_ids: Sequence[str]) -> list[RankRow]:
        if not self.known:
            return []
        return [RankRow(run_id=run_ids[0], rank=r, experiment="e", name="", world_size=3,
                        local_rank=r, node="node-a", code=CodeVersion(), env=Environment(),
                        start_ms=NOW - 10_000) for r in (0, 1)]

    def status_events(self, run_ids: Sequence[str]) -> dict[str, list[StatusEvent]]:
        rows = [StatusEvent(run_id=run_ids[0], rank=r, status=s, error=e,
                            producer_id=f"p{r}", seq=seq, ts_ms=NOW - 10_000 + seq)
                for r, s, e, seq in ((0, "RUNNING", "", 1), (1, "RUNNING", "", 1),
                                     (1, "FAILED", "a\nKeyError: 'x'", 9))]
        return {run_ids[0]: rows if self.known else []}

    def run_starts(self, run_ids: Sequence[str]) -> dict[str, list[StartRow]]:
        return {run_ids[0]: []}  # a run stored before run_starts: its runs rows stand in

    def run_exists(self, run_id: str) -> bool:
        return self.known

    def rank_value_stats(self, run_id: str, keys: Sequence[str], since_ms: int = 0
                         ) -> dict[tuple[int, str], Distribution]:
        return {k: d for k, d in self.stats.items() if k[1] in keys}

    def rank_lags(self, run_id: str, key: str, since_ms: int = 0) -> dict[int, Distribution]:
        self.lag_keys.append(key)
        return {0: Distribution(count=5), 1: Distribution(count=5)}

    def first_non_finite(self, run_id: str, since_ms: int = 0
                         ) -> dict[int, list[FirstNonFinite]]:
        return {0: [FirstNonFinite(key="loss", step=3, value=math.nan)]}

    def rank_last_seen(self, run_id: str) -> dict[int, int]:
        return {0: NOW - 1000, 1: NOW - 5000}

    def busiest_key(self, run_id: str, since_ms: int = 0) -> str:
        return self.busiest


def service(store: FakeStore) -> QueryService:
    return QueryService(store)  # type: ignore[arg-type]  # the reads GetRankHealth makes


def test_service_picks_the_keys_and_diagnoses() -> None:
    step = names.TELEMETRY_STEP_TIME
    store = FakeStore(stats={(0, step): Distribution(count=5, p50=0.1, p95=0.1, max=0.1),
                             (1, step): Distribution(count=5, p50=0.2, p95=0.2, max=0.2),
                             (0, names.TELEMETRY_DATA_WAIT): Distribution(count=4, p50=0.01),
                             (0, "custom/step"): Distribution(count=5, p50=9.0)})
    report = service(store).rank_health("run-1", now_ms=NOW)
    assert report.lag_key == step and store.lag_keys == [step]
    assert [r.rank for r in report.ranks] == [0, 1, 2]  # world size 3
    r0, r1, r2 = report.ranks
    assert (r0.node, r0.data_wait_p50_s, r0.last_seen_ms) == ("node-a", 0.01, NOW - 1000)
    assert r0.problems == ("NaN in loss at step 3",)
    assert r1.problems == ("FAILED: KeyError: 'x'", "step time p50 1.33x the median rank")
    assert r2.problems == ("no data from this rank",)
    assert report.suspects == (1, 0, 2)
    # No step times logged under the key: the lag falls back to the busiest key.
    other = service(store).rank_health("run-1", "nope", now_ms=NOW)
    assert other.lag_key == "loss" and store.lag_keys[-1] == "loss"
    explicit = service(store).rank_health("run-1", "custom/step", "acc", now_ms=NOW)
    assert explicit.lag_key == "acc" and explicit.ranks[0].step_time_p50_s == 9.0
    assert service(FakeStore(busiest="")).rank_health("run-1", "nope").lag_key == ""


def test_service_validates_and_knows_unknown_runs() -> None:
    svc = service(FakeStore())
    for run_id, step_key, lag_key in (("bad id", "", ""), ("r", "k" * 251, ""),
                                      ("r", "", "k" * 251), ("", "", "")):
        with pytest.raises(InvalidArgumentError):
            svc.rank_health(run_id, step_key, lag_key)
    with pytest.raises(NotFoundError, match="ghost"):
        service(FakeStore(known=False)).rank_health("ghost")


# --- the repository's SQL ------------------------------------------------------------------


def test_rank_health_sql_names_only_tables_and_columns_of_the_contract() -> None:
    from runstream.query.repository import ClickHouseRepository
    from tests.unit.test_tables_sql import CONTRACT, _identifiers, _RecordingClient

    repo = ClickHouseRepository("chdb:///never-opened", "db")
    client = _RecordingClient()
    repo._local.client = client
    repo.rank_value_stats("r1", ["a", "b"])
    repo.rank_lags("r1", "a")
    repo.first_non_finite("r1")
    repo.rank_last_seen("r1")
    repo.busiest_key("r1")
    assert repo.rank_value_stats("r1", []) == {}
    assert len(client.sql) == 5
    extra = {"OVER", "PARTITION", "countIf", "quantilesIf", "quantiles", "median",
             "startsWith"}
    for sql in client.sql:
        read, _, words = _identifiers(sql)
        assert read and read <= CONTRACT.keys(), sql
        columns = {c for name in read
                   for c, _ in (*CONTRACT[name].columns, *CONTRACT[name].computed)}
        assert words - extra <= columns, f"{sorted(words - extra - columns)}\n{sql}"
    assert ranks.STRAGGLER_RATIO == 1.2  # the documented default


# --- what `runstream ranks` prints -------------------------------------------------------


def test_ranks_text_shows_every_rank_and_each_suspects_problems_whole() -> None:
    from runstream.cli.ranks import format_bytes, format_seconds, ranks_text

    report = report_of([rank(0, 0.1, lag_p50_ms=0.0), rank(1, 0.1, lag_p50_ms=-3.0),
                        rank(2, 0.15, lag_p50_ms=2500.0, device_memory_max_bytes=3 << 30),
                        rank(3, 0.0, steps=0, node="", status=UNSPECIFIED, last_seen_ms=0)],
                       lag_ranks=[0, 1, 2], lag_key="telemetry/step_time_s")
    text = ranks_text(report)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["RANK", "NODE", "STATUS", "STEPS"]
    assert lines[1].split()[:8] == ["0", "n0", "RUNNING", "100", "100.0ms", "110.0ms", "+0ms",
                                    "+0ms"]
    assert "3.0GiB" in lines[3] and lines[4].split()[:4] == ["3", "-", "UNSPECIFIED", "0"]
    assert lines[-3:] == [
        "suspects (slowest first): 2, 3",
        "  rank 2: step time p50 1.50x the median rank; lag p50 2500 ms behind the median rank",
        "  rank 3: no data from this rank",
    ]
    assert (format_seconds(0), format_seconds(0.00085), format_seconds(1.25)) == (
        "-", "850us", "1.25s")
    assert (format_bytes(0), format_bytes(512), format_bytes(1536)) == ("-", "512B", "1.5KiB")
