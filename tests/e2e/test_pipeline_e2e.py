"""Four rank processes of one job, through the whole pipeline, checked point by point.

SDK (4 processes) -> real Kafka broker -> `runstream serve` (its own process: consumer +
embedded ClickHouse + gRPC) -> runstream.query.Client. And the same without Kafka:
the ranks spool locally and `runstream serve` ingests the spool.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from runstream.query.models import MetricHistory
from tests.e2e.rank_job import value
from tests.helpers import local_store_env, wait_for

WORLD_SIZE = 4


STEPS = 500


HERE = Path(__file__).resolve().parent


def start_serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "runstream.cli.main", "serve"], env=env)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture
def service_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = local_store_env(tmp_path)
    yield env


def run_ranks(env: dict[str, str], run_id: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "rank_job.py"), str(STEPS)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(WORLD_SIZE),
                 "TORCHELASTIC_RUN_ID": run_id},
        )
        for r in range(WORLD_SIZE)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * WORLD_SIZE


def history_or_none(client: Client, run_id: str, key: str) -> MetricHistory | None:
    try:
        return client.metric_history(run_id, key)
    except NotFoundError:  # not ingested yet
        return None


def check_every_point(client: Client, run_id: str) -> None:
    for key in ("loss", "acc"):
        history = wait_for(
            lambda k=key: history_or_none(client, run_id, k),
            lambda h: h is not None and len(h.steps) >= WORLD_SIZE * STEPS,
            timeout_s=120, what=f"all {key} points",
        )
        assert history is not None
        points = list(zip(history.ranks, history.steps, history.values, strict=True))
        expected = [(r, s, value(r, s, key)) for r in range(WORLD_SIZE) for s in range(STEPS)]
        assert points == expected, f"{key}: points missing, duplicated or wrong"
        for rank in (0, 3):
            only = client.metric_history(run_id, key, ranks=[rank])
            assert list(only.steps) == list(range(STEPS))
            assert set(only.ranks) == {rank}
    run = wait_for(
        lambda: client.get_run(run_id),
        lambda r: r.info.status == "FINISHED" and len(r.ranks) == WORLD_SIZE
        and all(rk.status == "FINISHED" for rk in r.ranks),
        timeout_s=60, what="every rank FINISHED",
    )
    assert run.info.world_size == WORLD_SIZE
    assert run.info.experiment == "e2e"
    assert {p.key: p.value for p in run.params} == {"lr": "0.1", "opt.name": "sgd"}
    summaries = {m.key: m for m in run.metrics}
    assert summaries["loss"].last_step == STEPS - 1
    assert summaries["loss"].max == value(WORLD_SIZE - 1, STEPS - 1, "loss")
    assert summaries["loss"].min == value(0, 0, "loss")


def test_four_ranks_through_kafka(
    service_env: dict[str, str], kafka_bootstrap: str, kafka_topic: str
) -> None:
    env = {**service_env, "RUNSTREAM_KAFKA": kafka_bootstrap, "RUNSTREAM_TOPIC": kafka_topic}
    serve = start_serve(env)
    run_id = f"e2e-kafka-{uuid.uuid4().hex[:8]}"
    try:
        with Client(env["RUNSTREAM_QUERY_ADDR"]) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve")
            run_ranks(env, run_id)
            check_every_point(client, run_id)
        # Nothing went to the spool: Kafka carried every event.
        assert not list(Path(env["RUNSTREAM_SPOOL_DIR"]).glob("*.spool"))
    finally:
        assert stop(serve) == 0


def test_four_ranks_through_the_local_spool(service_env: dict[str, str]) -> None:
    serve = start_serve(service_env)
    run_id = f"e2e-spool-{uuid.uuid4().hex[:8]}"
    try:
        with Client(service_env["RUNSTREAM_QUERY_ADDR"]) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve")
            run_ranks(service_env, run_id)
            check_every_point(client, run_id)
    finally:
        assert stop(serve) == 0
