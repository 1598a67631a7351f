"""A broker killed with SIGKILL under a running pipeline, then started again: every point
sent before and after is stored exactly once, and the recovery time is printed.

The test runs its own single-node broker (deploy/kafka.sh on ports of its own, with a
data directory of its own), so killing it never touches the session's broker. The
timing is printed, not asserted (it depends on the machine); the structural reason for
a fast recovery (the pipeline thread never waits on the lag report) is asserted by
tests/integration/test_consumer_lag.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.proto import codec
from runstream.proto.v1 import events_pb2 as pb
from tests.factories import make_config, metrics_event
from tests.helpers import REPO, count, create_topic, free_port, produce, wait_for

pytestmark = pytest.mark.kafka

KAFKA_SH = str(REPO / "deploy" / "kafka.sh")
POINTS = 1000  # per event


def event(seq: int) -> pb.RunEvent:
    return metrics_event(POINTS, run_id="restart-1", seq=seq, keys=("loss",),
                         step0=(seq - 1) * POINTS, producer_id="p0")


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A broker of this test's own: (bootstrap, the KAFKA_* environment of kafka.sh)."""
    env = {**os.environ, "KAFKA_PORT": str(free_port()),
           "KAFKA_CONTROLLER_PORT": str(free_port()),
           "KAFKA_DATA_DIR": str(tmp_path / "kafka")}
    started = subprocess.run([KAFKA_SH, "start"], env=env, capture_output=True, text=True,
                             timeout=300, check=True)
    try:
        yield started.stdout.strip().splitlines()[-1], env
    finally:
        subprocess.run([KAFKA_SH, "stop"], env=env, capture_output=True, timeout=120)


def kill_broker(env: dict[str, str]) -> None:
    pid = int((Path(env["KAFKA_DATA_DIR"]) / "broker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    while True:  # the pid is the JVM's own (nohup java ... &), reaped by init
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_pipeline_recovers_from_a_sigkilled_broker(
    own_broker: tuple[str, dict[str, str]], chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    bootstrap, env = own_broker
    topic = f"rs-restart-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, f"{topic}.dlq", 1)
    config = make_config(bootstrap, topic, chdb_dsn, ch_database, tmp_path,
                         progress_interval_s=1.0)
    pipeline = build_kafka_pipeline(config)
    stop = threading.Event()
    thread = pipeline.start(stop)
    client: Any = connect_clickhouse(chdb_dsn, ch_database)
    try:
        produce(bootstrap, topic, [event(s) for s in range(1, 11)], codec.PROTOBUF)
        wait_for(lambda: count(client, "metrics"), lambda n: n == 10 * POINTS,
                 what="points before the kill")
        kill_broker(env)
        killed = time.monotonic()
        subprocess.run([KAFKA_SH, "start"], env=env, capture_output=True, timeout=300,
                       check=True)
        restarted = time.monotonic()
        produce(bootstrap, topic, [event(s) for s in range(11, 21)], codec.PROTOBUF)
        sent = time.monotonic()
        wait_for(lambda: count(client, "metrics"), lambda n: n >= 20 * POINTS,
                 timeout_s=240, interval_s=0.1, what="points after the restart")
        ingested = time.monotonic()
        assert thread.is_alive() and pipeline.error is None
        print(f"\nbroker SIGKILLed and restarted in {restarted - killed:.1f} s; new points "
              f"sent {sent - restarted:.1f} s after the restart and stored "
              f"{ingested - sent:.1f} s after that ({ingested - restarted:.1f} s from the "
              f"restart)")
        assert count(client, "metrics") == 20 * POINTS
    finally:
        stop.set()
        thread.join(60)
        client.close()
