"""Two `runstream consume` processes in one consumer group share the partitions of a live
stream; one is SIGKILLed mid-stream and the other takes its partitions over.

chdb opens one path per process, so each consumer writes its own embedded ClickHouse
(with a ClickHouse server both would share one DSN). Exactness is therefore checked on
the union of the two stores, collapsed by each event's identity the way a shared
ReplacingMergeTree collapses it: every event is stored whole, events replayed into both
stores are identical, and nothing is missing. Since offsets carry the id of the store
that holds their rows, the survivor re-reads the killed consumer's partitions from the
beginning into its own store, which ends complete. The single-store exactness under
SIGKILL is test_consumer_crash_e2e.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from runstream.proto import codec
from runstream.proto.v1 import events_pb2 as pb
from tests.helpers import committed, wait_for

pytestmark = pytest.mark.kafka


RUNS = 8  # one rank each: keys "grp-<i>/0" spread over the topic's 4 partitions


# One event per run per round, a round every ROUND_S: at least ROUNDS rounds, and the stream
# goes on for ROUNDS_AFTER_KILL rounds after the kill, however long the group took to form
# (under load the setup outlasted a fixed 12 s stream), so the survivor takes over mid-stream.
ROUNDS = 60
ROUNDS_AFTER_KILL = 30
MAX_ROUNDS = 1_500
ROUND_S = 0.2


POINTS = 500  # per event: 250 steps x (loss, acc)


# A consumer's progress line (runstream.consumer.progress.format_rows): points it stored.
PROGRESS_LINE = re.compile(r"runstream: ([\d,]+) points, ")


TS = 1_760_000_000_000


VERIFY = r"""
import json, sys
import clickhouse_connect
c = clickhouse_connect.get_client(dsn=sys.argv[1], database=sys.argv[2])
rows = c.query("SELECT run_id, rank, seq, count(), sum(value) FROM metrics FINAL"
               " GROUP BY run_id, rank, seq").result_rows
print(json.dumps([[r, k, s, n, float(v)] for r, k, s, n, v in rows]))
"""


def event(run: int, seq: int) -> pb.RunEvent:
    e = pb.RunEvent(run_id=f"grp-{run}", experiment="group", rank=0, world_size=1,
                    producer_id=f"p{run}", seq=seq, ts_ms=TS + seq)
    m = e.metrics
    m.keys.extend(("loss", "acc"))
    m.key_index.extend(i % 2 for i in range(POINTS))
    m.steps.extend((seq - 1) * (POINTS // 2) + i // 2 for i in range(POINTS))
    m.values.extend(run * 1e6 + seq * 1e3 + i + 0.25 for i in range(POINTS))
    m.ts_ms.extend(TS + seq for _ in range(POINTS))
    return e


def stored(dsn: str) -> dict[tuple[str, int], tuple[int, float]]:
    """(run_id, seq) -> (points, sum of values) in one consumer's store (after it stopped)."""
    out = subprocess.run([sys.executable, "-c", VERIFY, dsn, "rs"], capture_output=True,
                         text=True, timeout=120, check=True)
    return {(r, s): (n, v) for r, _rank, s, n, v in json.loads(out.stdout)}


def test_two_consumer_processes_share_a_stream_and_one_takes_over_from_a_killed_one(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    group = f"rs-group-{tmp_path.name[-12:]}".replace("_", "-")
    partitions: set[int] = set()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    request.addfinalizer(producer.close)
    header = [(codec.CONTENT_TYPE_HEADER, codec.PROTOBUF_CONTENT_TYPE.encode())]

    killed = threading.Event()
    rounds = [0]  # rounds sent

    def stream() -> None:
        after_kill = 0
        while rounds[0] < MAX_ROUNDS and (rounds[0] < ROUNDS or after_kill < ROUNDS_AFTER_KILL):
            seq = rounds[0] + 1
            futures = [producer.send(kafka_topic, codec.encode(event(run, seq)),
                                     key=f"grp-{run}/0".encode(), headers=header)
                       for run in range(RUNS)]
            partitions.update(f.get(timeout=30).partition for f in futures)
            rounds[0] = seq
            after_kill += killed.is_set()
            time.sleep(ROUND_S)

    streaming = threading.Thread(target=stream, name="test-stream", daemon=True)
    streaming.start()

    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({
        "RUNSTREAM_HOME": str(tmp_path / "home"), "RUNSTREAM_CLICKHOUSE_DATABASE": "rs",
        "RUNSTREAM_KAFKA": kafka_bootstrap, "RUNSTREAM_TOPIC": kafka_topic,
        "RUNSTREAM_CONSUMER_GROUP": group,
        # Small, frequent batches: the kill lands with work written but not committed.
        "RUNSTREAM_CONSUMER_MAX_BATCH_ROWS": "3000",
        "RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S": "0.2",
        # Each process reports the points it stored (its progress line) twice a second.
        "RUNSTREAM_CONSUMER_PROGRESS_S": "0.5",
    })
    dsns = {name: f"chdb://{tmp_path / name}" for name in ("a", "b")}
    consume = [sys.executable, "-m", "runstream.cli.main", "consume"]
    procs: dict[str, subprocess.Popen[str]] = {}
    stored_points: dict[str, int] = {}  # as each process last reported it

    def read_progress(name: str, out: Any) -> None:
        for line in out:  # drained to the end, so the process never blocks on its stdout
            reported = PROGRESS_LINE.match(line)
            if reported:
                stored_points[name] = int(reported[1].replace(",", ""))

    def stop_all() -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    request.addfinalizer(stop_all)
    for name, dsn in dsns.items():
        procs[name] = subprocess.Popen(consume, env={**env, "RUNSTREAM_CLICKHOUSE": dsn},
                                       stdout=subprocess.PIPE, text=True)
        threading.Thread(target=read_progress, args=(name, procs[name].stdout),
                         name=f"test-progress-{name}", daemon=True).start()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="rs-test-group")
    request.addfinalizer(admin.close)

    def assignments() -> list[set[int]]:
        """The partitions of each group member that holds any."""
        try:
            info: dict[str, Any] = admin.describe_groups([group]).get(group) or {}
        except KafkaError:  # the coordinator may still be loading the group
            return []
        owned = [{p for a in (m.get("member_assignment") or {}).get("assigned_partitions", [])
                  for p in a["partitions"]} for m in info.get("members", [])]
        return [parts for parts in owned if parts]

    def offsets() -> dict[int, int]:
        try:
            listed = admin.list_group_offsets({group: None}).get(group, {})
        except KafkaError:
            return {}
        return {tp.partition: o.offset for tp, o in listed.items()}

    # Both processes joined and hold partitions; then each has committed on its own
    # partitions since, and says it has stored points. (Commits alone do not tell: a
    # previous owner's late commit of a batch it read before the rebalance is accepted.)
    owners = wait_for(assignments, lambda a: len(a) == 2, timeout_s=90, interval_s=0.2,
                      what="two group members with partitions")
    before = offsets()

    def members_that_committed() -> int:
        now = offsets()
        return sum(1 for parts in owners
                   if any(now.get(p, -1) > before.get(p, -1) for p in parts))

    wait_for(members_that_committed, lambda n: n == 2, timeout_s=60, interval_s=0.1,
             what="a commit by each member")
    wait_for(lambda: dict(stored_points), lambda p: p.get("a", 0) > 0 and p.get("b", 0) > 0,
             timeout_s=60, interval_s=0.1, what="points stored by each member")
    assert sorted(map(sorted, assignments())) == sorted(map(sorted, owners)), \
        "the group rebalanced again before the kill"
    assert streaming.is_alive(), "the stream reached MAX_ROUNDS before the kill"
    procs["a"].send_signal(signal.SIGKILL)
    procs["a"].wait(timeout=30)
    killed.set()

    streaming.join(timeout=120)
    assert not streaming.is_alive()
    assert len(partitions) >= 2, "the runs' keys should spread over several partitions"
    total = RUNS * rounds[0]
    wait_for(lambda: committed(admin, group), lambda n: n >= total, timeout_s=120,
             interval_s=0.2, what="every offset committed by the survivor")
    procs["b"].send_signal(signal.SIGTERM)
    assert procs["b"].wait(timeout=60) == 0

    a, b = stored(dsns["a"]), stored(dsns["b"])
    assert a and b, "each consumer should have stored part of the stream"
    expected = {(f"grp-{run}", seq): (POINTS, float(sum(event(run, seq).metrics.values)))
                for run in range(RUNS) for seq in range(1, rounds[0] + 1)}
    for store in (a, b):
        for ev, (n, value_sum) in store.items():
            assert n == POINTS, f"event {ev} stored partly"
            assert value_sum == pytest.approx(expected[ev][1], rel=1e-12)
    assert set(a) | set(b) == set(expected), "events missing after the takeover"
    # Offsets are committed with the id of the store that holds the rows: the survivor
    # finds the killed consumer's commits naming another store, so it reads those
    # partitions again from the beginning into its own store (with one shared store, as
    # in production, the ids agree and only the uncommitted tail is replayed, collapsed
    # by each event's identity). Its store ends complete.
    assert set(b) == set(expected), "the survivor's store should hold every event"
