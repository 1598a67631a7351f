"""`rm -rf` of the embedded store under a running `runstream serve` (real broker, real
chdb, a real serve process): nothing more is committed, health answers NOT_SERVING,
queries answer UNAVAILABLE naming the path; restarted, serve ingests every point that
was in Kafka into the new store, exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient

from runstream.proto import codec
from runstream.proto.errors import UnavailableError
from runstream.proto.v1 import events_pb2 as pb
from runstream.query.client import Client
from tests.factories import envelope, metrics_event
from tests.helpers import committed, free_port, produce, wait_for

pytestmark = pytest.mark.kafka

POINTS = 1000  # per event


def events(run_id: str, seqs: range) -> list[pb.RunEvent]:
    """seq 1 starts the run; every later seq is POINTS points of "loss"."""
    out = []
    for seq in seqs:
        if seq == 1:
            e = envelope(run_id, seq=seq, world_size=1, producer_id="p0")
            e.run_started.name = "live run"
        else:
            e = metrics_event(POINTS, run_id=run_id, seq=seq, keys=("loss",),
                              step0=(seq - 2) * POINTS, producer_id="p0")
        out.append(e)
    return out


def stored_points(client: Client, run_id: str) -> int:
    try:
        return len(client.metric_history(run_id, "loss", page_size=1_000_000))
    except Exception:  # not ingested yet, or the store is gone
        return -1


@pytest.fixture
def serve_env(kafka_bootstrap: str, kafka_topic: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({
        "RUNSTREAM_HOME": str(tmp_path / "home"),
        "RUNSTREAM_CLICKHOUSE": f"chdb://{tmp_path / 'chdb'}",
        "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
        "RUNSTREAM_QUERY_ADDR": f"127.0.0.1:{free_port()}",
        "RUNSTREAM_UI_ADDR": "127.0.0.1:0",
        "RUNSTREAM_KAFKA": kafka_bootstrap,
        "RUNSTREAM_TOPIC": kafka_topic,
        "RUNSTREAM_CONSUMER_GROUP": f"rs-gone-{uuid.uuid4().hex[:8]}",
        # A restarted serve gets its partitions back at once, not after a session timeout.
        "RUNSTREAM_CONSUMER_INSTANCE_ID": "serve-1",
    })
    yield env


def start_serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "runstream.cli.main", "serve"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_store_removed_under_serve_stops_commits_and_is_refilled_after_restart(
    serve_env: dict[str, str], kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = serve_env
    run_id = f"gone-{uuid.uuid4().hex[:8]}"
    store = tmp_path / "chdb"
    log = tmp_path / "serve.log"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="rs-test-offsets")
    request.addfinalizer(admin.close)
    group = env["RUNSTREAM_CONSUMER_GROUP"]
    first, second = events(run_id, range(1, 12)), events(run_id, range(12, 22))

    serve = start_serve(env, log)
    try:
        with Client(env["RUNSTREAM_QUERY_ADDR"], timeout_s=30) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve")
            produce(kafka_bootstrap, kafka_topic, first, codec.PROTOBUF)
            wait_for(lambda: stored_points(client, run_id), lambda n: n == 10 * POINTS,
                     what="the first points")
            wait_for(lambda: committed(admin, group), lambda n: n == len(first),
                     what="the first offsets committed")

            shutil.rmtree(store)
            produce(kafka_bootstrap, kafka_topic, second, codec.PROTOBUF)
            wait_for(lambda: not client.healthy(), timeout_s=15, what="health NOT_SERVING")
            with pytest.raises(UnavailableError, match=str(store)):
                client.get_run(run_id)
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert code == 1, output
    assert f"the ClickHouse store {store} was removed" in output
    # Nothing was committed for the points written into the removed store.
    assert committed(admin, group) == len(first)

    serve = start_serve(env, log)
    try:
        with Client(env["RUNSTREAM_QUERY_ADDR"], timeout_s=30) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve, restarted")
            wait_for(lambda: stored_points(client, run_id), lambda n: n == 20 * POINTS,
                     timeout_s=120, what="every point in the new store")
            run = client.get_run(run_id)
            assert run.info.name == "live run"
            assert [(r.rank, r.points_stored) for r in run.ranks] == [(0, 20 * POINTS)]
            wait_for(lambda: committed(admin, group), lambda n: n == len(first) + len(second),
                     what="every offset committed")
            assert stored_points(client, run_id) == 20 * POINTS
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert "reading the partition again from the beginning" in log.read_text(errors="replace")
