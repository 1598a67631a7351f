"""Builders of test data: run events as the SDK sends them, and rows as the consumer
writes them into the ClickHouse tables of runstream.proto.tables."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from runstream.consumer.config import ConsumerConfig
from runstream.proto import tables, validation
from runstream.proto.v1 import events_pb2 as pb
from runstream.query.models import RunInfo

TS = 1_760_000_000_000


def envelope(run_id: str = "run-1", rank: int = 0, seq: int = 1, world_size: int = 2,
             producer_id: str = "prod-a", ts_ms: int = TS) -> pb.RunEvent:
    return pb.RunEvent(run_id=run_id, experiment="exp", rank=rank, world_size=world_size,
                       local_rank=rank, node="node-1", producer_id=producer_id, seq=seq,
                       ts_ms=ts_ms)


def metrics_event(n: int, *, run_id: str = "run-1", rank: int = 0, seq: int = 1,
                  keys: tuple[str, ...] = ("loss", "acc"), step0: int = 0,
                  producer_id: str = "prod-a") -> pb.RunEvent:
    e = envelope(run_id=run_id, rank=rank, seq=seq, producer_id=producer_id)
    m = e.metrics
    m.keys.extend(keys)
    m.key_index.extend(i % len(keys) for i in range(n))
    m.steps.extend(step0 + i // len(keys) for i in range(n))
    m.values.extend(0.5 * i for i in range(n))
    m.ts_ms.extend(TS + i for i in range(n))
    return e


def sample_run(run_id: str = "run-1", rank: int = 0, points: int = 10,
               producer_id: str = "prod-a") -> list[pb.RunEvent]:
    """One rank's life: started, params, tags, input, metrics x2, heartbeat, artifact,
    finished; seq 1..9."""
    events = []
    e = envelope(run_id, rank, 1, producer_id=producer_id)
    e.run_started.name = "my run"
    e.run_started.code.git_commit = "abc123"
    e.run_started.code.git_branch = "main"
    e.run_started.code.in_git_repo = True
    e.run_started.env.python_version = "3.11.9"
    e.run_started.env.os = "Linux"
    e.run_started.env.command = "train.py --lr 0.1"
    e.run_started.env.cpu_count = 16
    events.append(e)
    e = envelope(run_id, rank, 2, producer_id=producer_id)
    e.params.params.add(key="lr", value="0.1", type=pb.FLOAT)
    e.params.params.add(key="model.depth", value="12", type=pb.INT)
    events.append(e)
    e = envelope(run_id, rank, 3, producer_id=producer_id)
    e.tags.tags.add(key="team", value="vision")
    events.append(e)
    e = envelope(run_id, rank, 4, producer_id=producer_id)
    e.input.name, e.input.uri, e.input.digest, e.input.role = "train", "s3://d/train", "d1", "train"
    events.append(e)
    events.append(metrics_event(points, run_id=run_id, rank=rank, seq=5, producer_id=producer_id))
    events.append(metrics_event(points, run_id=run_id, rank=rank, seq=6, step0=1000,
                                producer_id=producer_id))
    e = envelope(run_id, rank, 7, producer_id=producer_id)
    e.heartbeat.SetInParent()
    events.append(e)
    e = envelope(run_id, rank, 8, producer_id=producer_id)
    e.artifact.name, e.artifact.uri = "model.npz", "file:///store/ab"
    e.artifact.size_bytes, e.artifact.sha256 = 1234, "ab" * 32
    events.append(e)
    e = envelope(run_id, rank, 9, producer_id=producer_id)
    e.run_finished.status = pb.FINISHED
    events.append(e)
    for e in events:
        validation.validate(e)
    return events


FULL_TS = 1_750_000_000_000


def full_envelope(seq: int = 1) -> pb.RunEvent:
    return pb.RunEvent(
        run_id="run-1", experiment="exp", rank=1, world_size=4, local_rank=1, node="node-a",
        producer_id="p" * 32, seq=seq, ts_ms=FULL_TS,
    )


def every_event_type() -> list[pb.RunEvent]:
    started = full_envelope(1)
    started.run_started.name = "lr=0.1"
    started.run_started.code.git_commit = "a" * 40
    started.run_started.code.git_dirty = True
    started.run_started.code.in_git_repo = True
    started.run_started.env.python_version = "3.11.7"
    started.run_started.env.cpu_count = 2
    started.run_started.env.command = "train.py --lr 0.1"
    started.run_started.env.cpu_model = "AMD EPYC"
    started.run_started.env.memory_bytes = 24 << 30
    started.run_started.env.packages.add(name="numpy", version="2.4.6")
    started.run_started.env.gpus.add(name="NVIDIA H100", memory_bytes=80 << 30)
    started.run_started.env.gpu_driver = "550.54"
    started.run_started.env.cuda_version = "12.4"
    started.run_started.code.diff_sha256 = "ef" * 32
    started.run_started.code.diff_uri = "file:///store/sha256/ef/" + "ef" * 32
    started.run_started.restart = 2
    started.run_started.resume = True
    started.run_started.fork_run_id = "parent-run"
    started.run_started.fork_step = 99
    params = full_envelope(2)
    params.params.params.add(key="optim.lr", value="0.1", type=pb.FLOAT)
    params.params.params.add(key="epochs", value="3", type=pb.INT)
    params.params.params.add(key="amp", value="true", type=pb.BOOL)
    params.params.params.add(key="model", value="ünïcode ☃", type=pb.STRING)
    metrics = full_envelope(3)
    metrics.metrics.keys.extend(["loss", "acc"])
    metrics.metrics.key_index.extend([0, 1, 0, 1])
    metrics.metrics.steps.extend([0, 0, 1, 1])
    metrics.metrics.values.extend([2.5, math.nan, math.inf, -math.inf])
    metrics.metrics.ts_ms.extend([FULL_TS, FULL_TS, FULL_TS + 5, FULL_TS + 5])
    tags = full_envelope(4)
    tags.tags.tags.add(key="team", value="vision")
    artifact = full_envelope(5)
    artifact.artifact.name = "model.npz"
    artifact.artifact.uri = "file:///store/sha256/ab/" + "ab" * 32
    artifact.artifact.size_bytes = 12345
    artifact.artifact.sha256 = "ab" * 32
    inp = full_envelope(6)
    inp.input.name = "digits"
    inp.input.uri = "sklearn://digits"
    inp.input.digest = "sha256:" + "cd" * 32
    inp.input.role = "train"
    heartbeat = full_envelope(7)
    heartbeat.heartbeat.SetInParent()
    finished = full_envelope(8)
    finished.run_finished.status = pb.FAILED
    finished.run_finished.error = "Traceback ...\nValueError: boom"
    finished.run_finished.points_logged = 70_000
    finished.run_finished.dropped.add(reason="spool write failed: ENOSPC", events=3,
                                      points=3_000)
    annotation = full_envelope(9)
    annotation.annotation.tags.add(key="reviewed", value="yes")
    annotation.annotation.note = "lr too high after step 40 ☃"
    annotation.annotation.archive = pb.ARCHIVE
    annotation.annotation.user = "ada"
    annotation.annotation.host = "ws-1"
    events = [started, params, metrics, tags, artifact, inp, heartbeat, finished, annotation]
    bodies = {e.WhichOneof("body") for e in events}
    assert bodies == {f.name for f in pb.RunEvent.DESCRIPTOR.oneofs_by_name["body"].fields}
    return events


def make_config(bootstrap: str, topic: str, dsn: str, database: str, tmp_path: Path,
                **kw: Any) -> ConsumerConfig:
    return ConsumerConfig(kafka_bootstrap=(bootstrap,), topic=topic,
                          group_id=f"rs-test-{uuid.uuid4().hex[:8]}", clickhouse_dsn=dsn,
                          database=database, spool_dir=tmp_path / "spool", **kw)


T0 = 1_700_000_000_000


DEFAULTS: dict[str, Any] = {
    "String": "", "LowCardinality(String)": "", "UInt32": 0, "UInt64": 0, "Int64": 0,
    "Bool": False, "Float64": 0.0,
}


def zero(ctype: str) -> Any:
    if ctype.startswith("Map("):
        return {}
    if ctype.startswith("Array("):
        return []
    return DEFAULTS[ctype]


def insert(ch: Any, table: tables.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows given as dicts; missing columns get their type's zero value."""
    types = {name: ctype.split(" CODEC")[0] for name, ctype in table.columns}
    data = [[row.get(c, zero(types[c])) for c in table.column_names] for row in rows]
    ch.insert(table.name, data, column_names=list(table.column_names))


@contextmanager
def store_of(chdb_dsn: str, database: str, statements: Iterable[str]) -> Iterator[Any]:
    """A client of a database made by ``statements`` (e.g. an older schema's DDL), dropped
    when the block ends."""
    from runstream.consumer.factories import connect_clickhouse

    ch = connect_clickhouse(chdb_dsn, database)
    try:
        for statement in statements:
            ch.command(statement)
        yield ch
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
        ch.close()


def start_rank(ch: Any, run_id: str, rank: int, world_size: int, ts_ms: int, *,
               experiment: str = "exp", name: str = "", producer: str = "p") -> None:
    """What the consumer writes for a RunStarted: a runs row and a RUNNING status row."""
    insert(ch, tables.RUNS, [{
        "run_id": run_id, "rank": rank, "experiment": experiment, "name": name,
        "world_size": world_size, "local_rank": rank % 8, "node": f"node{rank // 8}",
        "git_commit": f"abc{rank}", "git_branch": "main", "git_remote": "git@x:y.git",
        "git_dirty": True, "in_git_repo": True, "python_version": "3.11.9", "os": "Linux",
        "command": f"train.py --rank {rank}", "cpu_count": 16,
        "producer_id": f"{producer}{rank}", "seq": 1, "ts_ms": ts_ms,
    }])
    set_status(ch, run_id, rank, "RUNNING", ts_ms, seq=1, experiment=experiment,
               producer=producer)


def set_status(ch: Any, run_id: str, rank: int, status: str, ts_ms: int, *, seq: int,
               error: str = "", experiment: str = "exp", producer: str = "p") -> None:
    insert(ch, tables.RUN_STATUS, [{
        "run_id": run_id, "rank": rank, "experiment": experiment, "status": status,
        "error": error, "producer_id": f"{producer}{rank}", "seq": seq, "ts_ms": ts_ms,
    }])


def points(run_id: str, key: str, rank: int, steps: range, *, seq: int = 10,
           ts0: int = T0) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "key": key, "rank": rank, "step": s, "value": rank * 1000 + s * 0.5,
         "ts_ms": ts0 + s, "producer_id": f"p{rank}", "seq": seq, "idx": i}
        for i, s in enumerate(steps)
    ]


def seed_full_run(ch: Any, run_id: str = "run-full") -> None:
    for rank in range(3):
        start_rank(ch, run_id, rank, 3, T0 + 10 * rank, name="resnet" if rank == 0 else "r")
    # Rank 0's RunStarted replayed (same row, separate insert) must not double anything.
    start_rank(ch, run_id, 0, 3, T0, name="resnet")
    insert(ch, tables.PARAMS, [
        {"run_id": run_id, "key": "lr", "value": "0.01", "type": "FLOAT", "rank": 0,
         "producer_id": "p0", "seq": 2, "ts_ms": T0 + 1},
        {"run_id": run_id, "key": "lr", "value": "0.02", "type": "FLOAT", "rank": 1,
         "producer_id": "p1", "seq": 2, "ts_ms": T0 + 1},
        {"run_id": run_id, "key": "batch", "value": "64", "type": "INT", "rank": 1,
         "producer_id": "p1", "seq": 3, "ts_ms": T0 + 1},
    ])
    insert(ch, tables.PARAMS, [  # replay
        {"run_id": run_id, "key": "lr", "value": "0.01", "type": "FLOAT", "rank": 0,
         "producer_id": "p0", "seq": 2, "ts_ms": T0 + 1},
    ])
    insert(ch, tables.TAGS, [
        {"run_id": run_id, "key": "team", "value": "vision", "rank": 0, "producer_id": "p0",
         "seq": 3, "ts_ms": T0 + 2},
        {"run_id": run_id, "key": "stage", "value": "dev", "rank": 0, "producer_id": "p0",
         "seq": 3, "ts_ms": T0 + 2},
    ])
    insert(ch, tables.TAGS, [  # a later value of the same tag wins
        {"run_id": run_id, "key": "stage", "value": "prod", "rank": 0, "producer_id": "p0",
         "seq": 4, "ts_ms": T0 + 3},
    ])
    sha = "ab" * 32
    artifact = {"run_id": run_id, "name": "model.npz", "uri": f"file:///store/{sha}",
                "size_bytes": 1234, "sha256": sha, "producer_id": "p0", "seq": 5,
                "ts_ms": T0 + 4}
    insert(ch, tables.ARTIFACTS, [{**artifact, "rank": 0}, {**artifact, "rank": 1}])
    insert(ch, tables.ARTIFACTS, [{**artifact, "rank": 0}])
    insert(ch, tables.INPUTS, [{
        "run_id": run_id, "name": "cifar", "rank": 0, "uri": "s3://data/cifar",
        "digest": "d1", "role": "train", "producer_id": "p0", "seq": 6, "ts_ms": T0 + 5,
    }] * 1)
    insert(ch, tables.METRICS, points(run_id, "loss", 0, range(0, 10)))
    insert(ch, tables.METRICS, points(run_id, "loss", 1, range(0, 12)))
    insert(ch, tables.METRICS, points(run_id, "loss", 1, range(5, 12)[:0]))  # no-op
    insert(ch, tables.METRICS, points(run_id, "acc", 0, range(0, 3)))
    # Rank 1 fails; rank 0 finishes later: rank 0 owns the run's status.
    set_status(ch, run_id, 1, "FAILED", T0 + 500, seq=50, error="Traceback...\nOOM")
    set_status(ch, run_id, 0, "FINISHED", T0 + 900, seq=60)
    set_status(ch, run_id, 0, "FINISHED", T0 + 900, seq=60)  # replay


def seed_runs(ch: Any, n: int = 12) -> None:
    """Runs r00..r(n-1): lr = 0.001*(i+1), batch 32/64, val_acc = i/n, loss series."""
    for i in range(n):
        run_id = f"r{i:02d}"
        start_rank(ch, run_id, 0, 1, T0 + i * 1000, experiment="exp" if i < 10 else "other",
                   name=f"run{i}")
        if i % 3 == 0:
            set_status(ch, run_id, 0, "FINISHED", T0 + i * 1000 + 500, seq=9)
        insert(ch, tables.PARAMS, [
            {"run_id": run_id, "key": "lr", "value": str(0.001 * (i + 1)), "type": "FLOAT",
             "rank": 0, "producer_id": "p0", "seq": 2, "ts_ms": T0},
            {"run_id": run_id, "key": "batch", "value": "32" if i % 2 else "64",
             "type": "INT", "rank": 0, "producer_id": "p0", "seq": 2, "ts_ms": T0},
        ])
        insert(ch, tables.TAGS, [{"run_id": run_id, "key": "model",
                                   "value": "bert-base" if i % 2 else "gpt2", "rank": 0,
                                   "producer_id": "p0", "seq": 3, "ts_ms": T0}])
        insert(ch, tables.INPUTS, [{"run_id": run_id, "name": "train", "uri": "s3://d/train",
                                     "digest": f"sha{i % 2}", "role": "train", "rank": 0,
                                     "producer_id": "p0", "seq": 4, "ts_ms": T0}])
        rows = [{"run_id": run_id, "key": "val_acc", "rank": 0, "step": s,
                 "value": i / n * s / 10, "ts_ms": T0 + s, "producer_id": "p0", "seq": 5,
                 "idx": s} for s in range(11)]
        rows += [{"run_id": run_id, "key": "loss", "rank": 0, "step": s,
                  "value": 10.0 - s + i, "ts_ms": T0 + s, "producer_id": "p0", "seq": 6,
                  "idx": s} for s in range(11)]
        insert(ch, tables.METRICS, rows)


def ids(runs: list[Any]) -> list[str]:
    return [r.run_id for r in runs]


def run_info(**kw: object) -> RunInfo:
    base: dict[str, object] = dict(run_id="r1", experiment="exp", name="resnet",
                                   status="FINISHED", start_ms=T0, end_ms=T0 + 3_723_000,
                                   world_size=8)
    base.update(kw)
    return RunInfo(**cast(Any, base))


def recorded_launch_started(rank: int = 0, run_id: str = "run-torchrun") -> pb.RunEvent:
    """Rank ``rank``'s RunStarted of a 4-rank, one-node torchrun run as an SDK that
    records its launch sends it: argv (one argument with a space), the launcher and its
    shape, cwd and script relative to the repository root."""
    event = envelope(run_id=run_id, rank=rank, seq=1, world_size=4)
    event.local_rank = rank
    event.node = "node-a"
    s = event.run_started
    s.name = "resnet"
    s.code.git_commit = "c" * 40
    s.code.git_remote = "git@github.com:acme/vision.git"
    s.code.in_git_repo = True
    s.code.cwd = "experiments"
    s.code.script = "experiments/train.py"
    s.env.python_version = "3.11.9"
    s.env.command = "/venv/bin/python train.py --name two words"
    s.env.argv.extend(["train.py", "--name", "two words"])
    s.env.launcher = "torchrun"
    s.env.nnodes = 1
    s.env.nproc_per_node = 4
    s.env.runstream_editable = True
    return event


def seed_through_consumer(ch: Any, events: Sequence[pb.RunEvent]) -> None:
    """Insert ``events``'s rows as the consumer builds them (RowBatch), metrics excepted."""
    from runstream.consumer.rows import RowBatch

    batch = RowBatch()
    for event in events:
        batch.add(event)
    for table, data in batch.nonempty():
        columns = cast(list[list[Any]], data)
        ch.insert(table.name, [list(row) for row in zip(*columns, strict=True)],
                  column_names=list(table.column_names))


# --- attempts, forks, annotations (the query side of issue 11) ------------------------------


def started_event(run_id: str, rank: int, world_size: int, ts_ms: int, *, producer: str,
                  restart: int = 0, resume: bool = False, fork_run_id: str = "",
                  fork_step: int = 0, experiment: str = "exp", seq: int = 1) -> pb.RunEvent:
    """A rank's RunStarted as the SDK sends it, with the launcher's restart count, resume
    and fork."""
    e = envelope(run_id=run_id, rank=rank, seq=seq, world_size=world_size,
                 producer_id=producer, ts_ms=ts_ms)
    e.experiment = experiment
    e.node = f"node-{rank // 2}"
    s = e.run_started
    s.name = "elastic"
    s.env.launcher = "torchrun"
    s.restart, s.resume = restart, resume
    s.fork_run_id, s.fork_step = fork_run_id, fork_step
    validation.validate(e)
    return e


def finished_event(run_id: str, rank: int, world_size: int, ts_ms: int, *, producer: str,
                   status: int = pb.FINISHED, error: str = "", seq: int = 9) -> pb.RunEvent:
    e = envelope(run_id=run_id, rank=rank, seq=seq, world_size=world_size,
                 producer_id=producer, ts_ms=ts_ms)
    e.run_finished.status = cast(Any, status)
    e.run_finished.error = error
    validation.validate(e)
    return e


def annotation_event(run_id: str, ts_ms: int, *, producer: str, seq: int = 1,
                     tags: Mapping[str, str] | None = None, note: str = "",
                     archive: int = pb.ARCHIVE_ACTION_UNSPECIFIED, user: str = "ada",
                     host: str = "ws-1", experiment: str = "exp") -> pb.RunEvent:
    """An Annotation as `runstream tag` / `note` / `archive` sends it (rank 0, world 1)."""
    e = envelope(run_id=run_id, rank=0, seq=seq, world_size=1, producer_id=producer,
                 ts_ms=ts_ms)
    e.experiment = experiment
    a = e.annotation
    for k, v in (tags or {}).items():
        a.tags.add(key=k, value=v)
    a.note, a.archive, a.user, a.host = note, cast(Any, archive), user, host
    validation.validate(e)
    return e
