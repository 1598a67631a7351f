"""GetRankHealth through the real engine and gRPC: step-time stragglers, lag, NaN/inf,
failed and silent ranks, a rank that never reported, replays, validation."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from runstream.proto import config as names
from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.proto.status import UNSPECIFIED
from runstream.query.client import Client
from tests.factories import insert, set_status, start_rank

STEPS = 100


def telemetry(run_id: str, rank: int, key: str, values: list[float], ts: list[int], *,
              seq: int) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "key": key, "rank": rank, "step": s, "value": v,
             "ts_ms": t, "producer_id": f"p{rank}", "seq": seq, "idx": s}
            for s, (v, t) in enumerate(zip(values, ts, strict=True))]


def seed_job(ch: Any, run_id: str, now_ms: int) -> None:
    """Five ranks in the world, four reported: rank 2 is 1.5x slower (and so falls behind),
    rank 1 logs a NaN loss at step 7 and an inf grad norm at 12, rank 3 failed."""
    base = now_ms - 30_000
    for rank in range(4):
        start_rank(ch, run_id, rank, 5, base - 1000)
        step_s = 0.15 if rank == 2 else 0.10
        ts = [base + s * (150 if rank == 2 else 100) + (0 if rank == 2 else rank)
              for s in range(STEPS)]
        values = [step_s] * STEPS
        if rank == 0:
            values[-5:] = [0.5] * 5  # a slow tail: p95 above p50
        rows = telemetry(run_id, rank, names.TELEMETRY_STEP_TIME, values, ts, seq=10)
        insert(ch, tables.METRICS, rows)
        if rank == 0:
            insert(ch, tables.METRICS, rows)  # a replay changes nothing
            insert(ch, tables.METRICS, telemetry(
                run_id, 0, names.TELEMETRY_DATA_WAIT, [0.02] * STEPS, ts, seq=11))
            insert(ch, tables.METRICS, telemetry(
                run_id, 0, names.TELEMETRY_DEVICE_MEMORY,
                [1e9 + s * 1e7 for s in range(STEPS)], ts, seq=12))
        loss = [1.0 / (s + 1) for s in range(STEPS)]
        grad = [0.5] * STEPS
        if rank == 1:
            loss[7], loss[9], grad[12] = math.nan, math.inf, -math.inf
        insert(ch, tables.METRICS, telemetry(run_id, rank, "loss", loss, ts, seq=13))
        insert(ch, tables.METRICS, telemetry(run_id, rank, "grad_norm", grad, ts, seq=14))
    set_status(ch, run_id, 3, "FAILED", base + 20_000, seq=99,
               error="Traceback (most recent call last):\nRuntimeError: CUDA error: ECC")


def test_rank_health_names_the_slow_and_broken_ranks(ch: Any, client: Client) -> None:
    now_ms = int(time.time() * 1000)
    seed_job(ch, "run-ranks", now_ms)
    report = client.rank_health("run-ranks")

    assert [r.rank for r in report.ranks] == [0, 1, 2, 3, 4]
    assert report.lag_key == names.TELEMETRY_STEP_TIME
    assert report.median_step_time_p50_s == pytest.approx(0.10)
    by_rank = {r.rank: r for r in report.ranks}
    r0, r1, r2, r3, r4 = (by_rank[i] for i in range(5))

    assert r0.steps == STEPS and r0.step_time_p50_s == pytest.approx(0.10)
    assert r0.step_time_p95_s > r0.step_time_p50_s
    assert r0.data_wait_p50_s == pytest.approx(0.02)
    assert r0.device_memory_max_bytes == int(1e9 + 99 * 1e7)
    assert (r0.node, r0.status, r0.problems) == ("node0", "RUNNING", ())
    assert now_ms - 30_000 < r0.last_seen_ms <= now_ms

    assert r2.step_time_p50_s == pytest.approx(0.15)
    assert r2.problems[0] == "step time p50 1.50x the median rank"
    assert r2.problems[1].startswith("lag p50 ") and r2.problems[1].endswith(
        " ms behind the median rank")
    # Rank 2 falls 50 ms further behind at every step; the others stay within ms.
    assert r2.lag_max_ms == pytest.approx(50 * (STEPS - 1) - 2, abs=1)
    assert all(abs(r.lag_max_ms) <= 3 for r in (r0, r1, r3))

    assert [(f.key, f.step) for f in r1.first_non_finite] == [("loss", 7), ("grad_norm", 12)]
    assert math.isnan(r1.first_non_finite[0].value)
    assert r1.first_non_finite[1].value == -math.inf
    assert r1.problems == ("NaN in loss at step 7 (and 1 more key)",)

    assert r3.status == "FAILED"
    assert r3.problems == ("FAILED: RuntimeError: CUDA error: ECC",)
    assert (r4.status, r4.steps, r4.problems) == (UNSPECIFIED, 0, ("no data from this rank",))

    # Slowest first; equal step times by lag (rank 3 is 1 ms behind, rank 1 1 ms ahead).
    assert report.suspects == (2, 3, 1, 4)
    assert report.attempt == 0


def test_silent_rank_and_the_busiest_key_for_lag(ch: Any, client: Client) -> None:
    now_ms = int(time.time() * 1000)
    run_id = "run-silent"
    # Rank 1 kept pace with rank 0 for 10 steps, ten minutes ago, then went silent.
    ts = [now_ms - 605_000 + s * 12_000 for s in range(51)]
    for rank, steps in ((0, 51), (1, 10)):
        start_rank(ch, run_id, rank, 2, ts[0] - 1000)
        insert(ch, tables.METRICS, telemetry(run_id, rank, "loss", [0.5] * steps, ts[:steps],
                                             seq=5))
        insert(ch, tables.METRIC_COUNTS, [{"run_id": run_id, "key": "loss", "rank": rank,
                                           "producer_id": f"p{rank}", "seq": 5,
                                           "points": steps, "ts_ms": ts[steps - 1]}])
    # More points, but system metrics count samples, not steps: never the lag key.
    insert(ch, tables.METRICS, telemetry(run_id, 0, "system/cpu_percent", [9.0] * 200,
                                         [now_ms - 5_000 + s for s in range(200)], seq=6))
    insert(ch, tables.METRIC_COUNTS, [{"run_id": run_id, "key": "system/cpu_percent",
                                       "rank": 0, "producer_id": "p0", "seq": 6,
                                       "points": 200, "ts_ms": now_ms - 5_000}])

    report = client.rank_health(run_id)
    assert report.lag_key == "loss"
    assert report.median_step_time_p50_s == 0.0
    r0, r1 = report.ranks
    assert r0.problems == ()
    assert (r0.lag_p50_ms, r1.lag_max_ms) == (0.0, 0.0)
    assert len(r1.problems) == 1
    silent_s = int(r1.problems[0].split()[-2])
    assert r1.problems[0] == f"no sign of life for {silent_s} s" and 490 <= silent_s <= 600
    assert report.suspects == (1,)
    # An explicit lag key; a step-time key nobody logged gives no step times.
    other = client.rank_health(run_id, step_time_key="nope/step_s", lag_key="loss")
    assert other.lag_key == "loss" and all(r.steps == 0 for r in other.ranks)


def test_rank_health_validation_and_unknown_runs(ch: Any, client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        client.rank_health("bad id!")
    start_rank(ch, "run-v", 0, 1, int(time.time() * 1000))
    with pytest.raises(InvalidArgumentError, match="metric"):
        client.rank_health("run-v", step_time_key="k" * 300)
    with pytest.raises(InvalidArgumentError, match="metric"):
        client.rank_health("run-v", lag_key="k" * 300)
    with pytest.raises(NotFoundError, match="nope"):
        client.rank_health("nope")
    report = client.rank_health("run-v")  # known, nothing logged: one healthy rank
    assert [(r.rank, r.status, r.problems) for r in report.ranks] == [(0, "RUNNING", ())]
    assert (report.lag_key, report.suspects) == ("", ())


def test_only_the_latest_attempt_counts(ch: Any, client: Client) -> None:
    """An elastic restart shrinks the job from 4 ranks to 2 and repeats steps 0..49: the
    report is about attempt 1's two ranks and their points alone (attempt 0's slow rank
    3 and its slow steps are history)."""
    now_ms = int(time.time() * 1000)
    run_id = "run-restarted"
    first, second = now_ms - 40_000, now_ms - 20_000
    for attempt, (t0, world) in enumerate(((first, 4), (second, 2))):
        for r in range(world):
            producer = "ab"[attempt]
            start_rank(ch, run_id, r, world, t0, producer=producer)
            insert(ch, tables.RUN_STARTS, [{
                "run_id": run_id, "rank": r, "world_size": world, "local_rank": r,
                "node": f"node-{attempt}", "restart": attempt, "launcher": "torchrun",
                "producer_id": f"{producer}{r}", "seq": 1, "ts_ms": t0}])
            step_s = 0.3 if (attempt, r) == (0, 3) else 0.1
            insert(ch, tables.METRICS, telemetry(
                run_id, r, names.TELEMETRY_STEP_TIME, [step_s] * 50,
                [t0 + 100 + s * 100 for s in range(50)], seq=10 + attempt))
    set_status(ch, run_id, 3, "FAILED", first + 9_000, seq=9, producer="a", error="boom")

    report = client.rank_health(run_id)
    assert report.attempt == 1
    assert [(r.rank, r.node, r.status, r.steps) for r in report.ranks] == [
        (0, "node-1", "RUNNING", 50), (1, "node-1", "RUNNING", 50)]
    assert report.suspects == () and report.median_step_time_p50_s == pytest.approx(0.1)
