"""CompareRuns through the real engine and gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.client import Client
from tests.factories import T0, insert, seed_runs


def test_compare_runs_puts_differences_first(ch: Any, client: Client) -> None:
    seed_runs(ch, 3)
    insert(ch, tables.RUNS, [{
        "run_id": "r01", "rank": 0, "experiment": "exp", "name": "run1", "world_size": 1,
        "git_commit": "def", "in_git_repo": True, "git_dirty": True, "git_diff_sha256": "d1",
        "packages": {"torch": "2.4.0", "numpy": "2.0"}, "gpus": ["H100", "H100"],
        "gpu_memory_bytes": [80 << 30, 80 << 30], "cuda_version": "12.4",
        "producer_id": "p0", "seq": 1, "ts_ms": T0 + 1000 + 1}])
    insert(ch, tables.RUNS, [{
        "run_id": "r00", "rank": 0, "experiment": "exp", "name": "run0", "world_size": 1,
        "git_commit": "abc", "in_git_repo": True, "packages": {"torch": "2.3.1", "numpy": "2.0"},
        "gpus": ["A100"], "gpu_memory_bytes": [40 << 30], "cuda_version": "12.1",
        "producer_id": "p0", "seq": 1, "ts_ms": T0 + 1}])
    c = client.compare_runs(["r00", "r01"], goals={"val_acc": "maximize"})
    assert [r.run_id for r in c.runs] == ["r00", "r01"]
    differing = [(f.section, f.key) for f in c.fields if f.differs]
    assert differing[0] == ("param", "batch") and ("param", "lr") in differing
    assert ("code", "git_commit") in differing and ("input", "train:train") in differing
    assert ("package", "torch") in differing and ("package", "numpy") not in differing
    assert ("hardware", "gpus") in differing and ("hardware", "cuda_version") in differing
    first_same = next(i for i, f in enumerate(c.fields) if not f.differs)
    assert all(f.differs for f in c.fields[:first_same])
    loss = next(m for m in c.metrics if m.key == "loss")
    assert loss.goal == "minimize" and loss.best_run == 0
    assert loss.stats[0].best == 0.0 and loss.stats[0].best_step == 10
    acc = next(m for m in c.metrics if m.key == "val_acc")
    assert acc.goal == "maximize" and acc.best_run == 1 and acc.stats[1].best_step == 10
    assert client.get_run("r01").env.packages[1].version == "2.4.0"
    assert client.get_run("r01").env.gpus[0].memory_bytes == 80 << 30
    with pytest.raises(NotFoundError, match="nope"):
        client.compare_runs(["r00", "nope"])
    with pytest.raises(InvalidArgumentError):
        client.compare_runs(["r00"])
