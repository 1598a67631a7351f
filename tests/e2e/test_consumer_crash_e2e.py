"""`runstream consume` killed with SIGKILL mid-stream, twice, then restarted: every point
exactly once. And `runstream serve` marking SIGKILLed / stopped ranks CRASHED.

The consumer runs as its own process on its own chdb path; results are read after it
stopped, by a verifier subprocess that opens the same path (one process per path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from runstream.proto import codec
from runstream.proto.v1 import events_pb2 as pb
from tests.helpers import committed, wait_for

pytestmark = pytest.mark.kafka


RANKS = 4


EVENTS_PER_RANK = 60


POINTS_PER_EVENT = 1000  # 2 keys x 500 steps


TS = 1_760_000_000_000


VERIFY = r"""
import json, sys
import clickhouse_connect
c = clickhouse_connect.get_client(dsn=sys.argv[1], database=sys.argv[2])
q = lambda sql: c.query(sql).result_rows
print(json.dumps({
    "final": q("SELECT count(), sum(value), uniqExact(run_id, key, rank, step, value)"
               " FROM metrics FINAL")[0],
    "raw": q("SELECT count() FROM metrics")[0][0],
    "counts": q("SELECT key, rank, sum(points) FROM metric_counts FINAL"
                " GROUP BY key, rank ORDER BY key, rank"),
    "summaries": q("SELECT key, rank, argMaxMerge(last), min(min), max(max)"
                   " FROM metric_summaries GROUP BY key, rank ORDER BY key, rank"),
    "dup_steps": q("SELECT count() FROM (SELECT run_id, key, rank, step FROM metrics FINAL"
                   " GROUP BY run_id, key, rank, step HAVING count() = 2)")[0][0],
}, default=str))
"""


def value(rank: int, seq: int, idx: int) -> float:
    return rank * 1e6 + seq * 1e3 + idx + 0.125


def events(run_id: str) -> list[pb.RunEvent]:
    """Per rank: metric events of 500 steps x (loss, acc); the last event repeats the
    steps of the one before with new values (a second value at the same step)."""
    out = []
    for rank in range(RANKS):
        for seq in range(1, EVENTS_PER_RANK + 1):
            e = pb.RunEvent(run_id=run_id, experiment="crash", rank=rank, world_size=RANKS,
                            producer_id=f"p{rank}", seq=seq, ts_ms=TS + seq)
            m = e.metrics
            m.keys.extend(("loss", "acc"))
            first_step = (min(seq, EVENTS_PER_RANK - 1) - 1) * (POINTS_PER_EVENT // 2)
            m.key_index.extend(i % 2 for i in range(POINTS_PER_EVENT))
            m.steps.extend(first_step + i // 2 for i in range(POINTS_PER_EVENT))
            m.values.extend(value(rank, seq, i) for i in range(POINTS_PER_EVENT))
            m.ts_ms.extend(TS + seq for _ in range(POINTS_PER_EVENT))
            out.append(e)
    return out


def test_sigkilled_consumer_restarted_leaves_every_point_once(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run_id = f"crash-{uuid.uuid4().hex[:8]}"
    evs = events(run_id)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20,
                             batch_size=1 << 20, max_request_size=32 << 20)
    for e in evs:
        producer.send(kafka_topic, codec.encode(e), key=f"{run_id}/{e.rank}".encode(),
                      headers=[(codec.CONTENT_TYPE_HEADER, codec.PROTOBUF_CONTENT_TYPE.encode())])
    producer.flush()
    producer.close()

    group = f"rs-crash-{uuid.uuid4().hex[:8]}"
    dsn = f"chdb://{tmp_path / 'chdb'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({
        "RUNSTREAM_HOME": str(tmp_path / "home"), "RUNSTREAM_CLICKHOUSE": dsn,
        "RUNSTREAM_CLICKHOUSE_DATABASE": "rs", "RUNSTREAM_KAFKA": kafka_bootstrap,
        "RUNSTREAM_TOPIC": kafka_topic, "RUNSTREAM_CONSUMER_GROUP": group,
        # Small batches: many commits, so the kills land between and inside batches.
        "RUNSTREAM_CONSUMER_MAX_BATCH_ROWS": "3000",
        # Static membership: the restarted consumer gets its partitions back at once,
        # not after the dead one's 45 s session timeout.
        "RUNSTREAM_CONSUMER_INSTANCE_ID": "consumer-1",
    })
    consume = [sys.executable, "-m", "runstream.cli.main", "consume"]
    total = len(evs)
    seen = 0
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="rs-test-offsets")
    request.addfinalizer(admin.close)
    for _kill in range(2):
        proc = subprocess.Popen(consume, env=env, stdout=subprocess.DEVNULL)
        try:
            # Wait until this incarnation committed something new, then kill it mid-stream.
            seen = wait_for(lambda: committed(admin, group),
                            lambda n, s=seen: n > s, timeout_s=90, interval_s=0.05,
                            what="a new commit")
            assert seen < total, "the consumer finished before it could be killed"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    proc = subprocess.Popen(consume, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: committed(admin, group), lambda n: n >= total,
                 timeout_s=120, what="every offset committed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    out = subprocess.run([sys.executable, "-c", VERIFY, dsn, "rs"], capture_output=True,
                         text=True, timeout=120, check=True)
    got: dict[str, Any] = json.loads(out.stdout)
    points = RANKS * EVENTS_PER_RANK * POINTS_PER_EVENT
    expected_sum = sum(sum(e.metrics.values) for e in evs)
    count, value_sum, distinct = got["final"]
    assert count == points == distinct
    assert float(value_sum) == pytest.approx(expected_sum, rel=1e-12)
    assert got["raw"] >= points  # replays reached ClickHouse and collapsed
    # The last event of each rank re-logs 500 steps per key: two values at one step.
    assert got["dup_steps"] == RANKS * POINTS_PER_EVENT
    assert got["counts"] == [[k, r, EVENTS_PER_RANK * POINTS_PER_EVENT // 2]
                             for k in ("acc", "loss") for r in range(RANKS)]
    for key, rank, last, lo, hi in got["summaries"]:
        k = 0 if key == "loss" else 1
        assert lo == value(rank, 1, k)
        assert hi == value(rank, EVENTS_PER_RANK, POINTS_PER_EVENT - 2 + k)
        assert last == hi  # the latest value at the highest (step, ts_ms)


RANK_SCRIPT = r"""
import threading, runstream
run = runstream.init(experiment="liveness", heartbeat_s=0.5)
run.log({"loss": 1.0}, step=0)
run.flush()
print("ready", flush=True)
threading.Event().wait()  # alive (heartbeating) until killed
"""


def start_rank(env: dict[str, str], rank: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", RANK_SCRIPT], text=True,
                            stdout=subprocess.PIPE,
                            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank),
                                 "WORLD_SIZE": "2"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_silent_ranks_become_crashed_and_running_again(tmp_path: Path) -> None:
    from runstream.query.client import Client
    from tests.helpers import local_store_env

    run_id = f"live-{uuid.uuid4().hex[:8]}"
    env = local_store_env(tmp_path, RUNSTREAM_CRASH_TIMEOUT_S="3", RUNSTREAM_RUN_ID=run_id)
    serve = subprocess.Popen([sys.executable, "-m", "runstream.cli.main", "serve"], env=env,
                             stdout=subprocess.DEVNULL)
    ranks: list[subprocess.Popen[str]] = []
    try:
        with Client(env["RUNSTREAM_QUERY_ADDR"]) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve")
            ranks = [start_rank(env, r) for r in range(2)]

            def statuses() -> tuple[str, dict[int, str]]:
                try:
                    run = client.get_run(run_id)
                except Exception:  # not ingested yet
                    return "", {}
                return run.info.status, {r.rank: r.status for r in run.ranks}

            wait_for(statuses, lambda s: s == ("RUNNING", {0: "RUNNING", 1: "RUNNING"}),
                     timeout_s=60, what="both ranks RUNNING")
            # A stopped process sends no heartbeats: CRASHED; resumed: RUNNING again.
            ranks[1].send_signal(signal.SIGSTOP)
            wait_for(statuses, lambda s: s == ("RUNNING", {0: "RUNNING", 1: "CRASHED"}),
                     timeout_s=60, what="rank 1 CRASHED")
            ranks[1].send_signal(signal.SIGCONT)
            wait_for(statuses, lambda s: s == ("RUNNING", {0: "RUNNING", 1: "RUNNING"}),
                     timeout_s=60, what="rank 1 RUNNING again")
            # SIGKILL: rank 1 alone, then rank 0, which owns the run.
            ranks[1].kill()
            wait_for(statuses, lambda s: s == ("RUNNING", {0: "RUNNING", 1: "CRASHED"}),
                     timeout_s=60, what="killed rank 1 CRASHED")
            ranks[0].kill()
            wait_for(statuses, lambda s: s == ("CRASHED", {0: "CRASHED", 1: "CRASHED"}),
                     timeout_s=60, what="the run CRASHED")
    finally:
        for p in ranks:
            p.kill()
            p.wait(timeout=30)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
