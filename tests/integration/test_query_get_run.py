"""GetRun through the real engine and gRPC: every section, rank 0's status, not found."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from tests.factories import T0, seed_full_run, set_status, start_rank


def test_get_run_returns_every_section(ch: Any, client: Client) -> None:
    seed_full_run(ch)
    run = client.get_run("run-full")

    info = run.info
    assert (info.run_id, info.experiment, info.name) == ("run-full", "exp", "resnet")
    assert info.status == "FINISHED"
    assert (info.start_ms, info.end_ms, info.world_size) == (T0, T0 + 900, 3)

    assert [(p.key, p.value, p.type) for p in run.params] == [
        ("batch", "64", "INT"), ("lr", "0.01", "FLOAT"),  # rank 0's lr preferred
    ]
    assert [(t.key, t.value) for t in run.tags] == [("stage", "prod"), ("team", "vision")]
    assert len(run.artifacts) == 1  # same content from two ranks, and a replay: once
    assert run.artifacts[0].name == "model.npz" and run.artifacts[0].size_bytes == 1234
    assert [(i.name, i.uri, i.role) for i in run.inputs] == [("cifar", "s3://data/cifar", "train")]

    metrics = {m.key: m for m in run.metrics}
    assert set(metrics) == {"acc", "loss"}
    loss = metrics["loss"]
    assert loss.last_step == 11 and loss.last == 1000 + 11 * 0.5  # highest step over all ranks
    assert (loss.min, loss.max) == (0.0, 1000 + 11 * 0.5)

    assert [(r.rank, r.status) for r in run.ranks] == [
        (0, "FINISHED"), (1, "FAILED"), (2, "RUNNING"),
    ]
    assert run.ranks[1].error.endswith("OOM") and run.ranks[1].end_ms == T0 + 500
    assert run.ranks[2].end_ms == 0 and run.ranks[2].start_ms == T0 + 20
    assert (run.ranks[1].node, run.ranks[1].local_rank) == ("node0", 1)
    assert run.code.git_commit == "abc0" and run.code.git_dirty and run.code.in_git_repo
    assert run.env.command == "train.py --rank 0" and run.env.cpu_count == 16


def test_run_status_is_rank_zeros_while_other_ranks_end(ch: Any, client: Client) -> None:
    start_rank(ch, "run-live", 0, 2, T0)
    start_rank(ch, "run-live", 1, 2, T0 + 5)
    set_status(ch, "run-live", 1, "FINISHED", T0 + 100, seq=9)
    info = client.get_run("run-live").info
    assert (info.status, info.end_ms) == ("RUNNING", 0)
    runs, _ = client.search_runs("exp")
    assert [(r.run_id, r.status, r.end_ms) for r in runs] == [("run-live", "RUNNING", 0)]


def test_unknown_run_is_not_found(ch: Any, client: Client) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        client.get_run("nope")
    with pytest.raises(NotFoundError):
        client.metric_history("nope", "loss")


def test_get_run_returns_the_recorded_launch(ch: Any, client: Client) -> None:
    """argv, launcher and shape, cwd and script travel from RunStarted through the
    consumer's rows, ClickHouse and GetRun unchanged; older rows read back empty."""
    from tests.factories import recorded_launch_started, seed_through_consumer

    seed_through_consumer(ch, [recorded_launch_started(rank) for rank in range(4)])
    run = client.get_run("run-torchrun")
    assert run.env.argv == ("train.py", "--name", "two words")
    assert (run.env.launcher, run.env.nnodes, run.env.nproc_per_node) == ("torchrun", 1, 4)
    assert run.env.runstream_editable is True
    assert (run.code.cwd, run.code.script) == ("experiments", "experiments/train.py")
    assert [(r.rank, r.local_rank) for r in run.ranks] == [(0, 0), (1, 1), (2, 2), (3, 3)]

    from runstream.cli.runs import reproduction

    plan = reproduction(run)
    assert plan.script.splitlines()[-2:] == [
        "cd experiments  # the recorded working directory, relative to the repository root",
        "torchrun --nnodes 1 --nproc-per-node 4 train.py --name 'two words'",
    ]

    start_rank(ch, "run-old", 0, 1, T0)  # a row of an older SDK: the new columns empty
    old = client.get_run("run-old")
    assert (old.env.argv, old.env.launcher, old.code.cwd, old.code.script) == ((), "", "", "")
