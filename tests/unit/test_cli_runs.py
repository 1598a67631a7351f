"""runstream.cli.runs: the runs table, show and reproduce texts, and the read commands over a
client."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import pytest

from runstream.cli import metrics, runs
from runstream.cli.runs import reproduce_text
from runstream.proto.errors import NotFoundError
from runstream.query.models import (
    CodeVersion,
    Environment,
    Gpu,
    Input,
    MetricHistory,
    MetricSummary,
    Package,
    Param,
    RankInfo,
    Run,
    RunInfo,
)
from tests.factories import T0, run_info


def test_runs_table_has_every_column() -> None:
    text = runs.runs_table([run_info(), run_info(run_id="r2", name="", status="RUNNING", end_ms=0)],
                         now_ms=T0 + 1000)
    header, first, second = text.splitlines()
    assert header.split() == ["RUN", "ID", "EXPERIMENT", "NAME", "STATUS", "RANKS", "STARTED",
                              "(UTC)", "DURATION", "FLAGS"]
    assert first.split() == ["r1", "exp", "resnet", "FINISHED", "8", "2023-11-14", "22:13:20",
                             "1h02m"]
    assert second.split()[2:4] == ["-", "RUNNING"] and second.endswith("1s+")


def test_show_text_has_every_section() -> None:
    run = Run(
        info=run_info(),
        params=(Param(key="lr", value="0.01", type="FLOAT"),),
        metrics=(MetricSummary(key="loss", last=0.5, last_step=99, min=0.4, max=2.0),),
        ranks=(RankInfo(rank=0, local_rank=0, node="n0", status="FINISHED", start_ms=T0,
                        end_ms=T0 + 1, error="Traceback\nValueError: boom"),),
    )
    text = runs.run_text(run, T0)
    for title in ("Params", "Tags", "Metrics", "Ranks", "Artifacts", "Inputs", "Code"):
        assert f"\n{title}\n" in text
    assert "(none)" in text and "ValueError: boom" in text and "0.01" in text


class _FakeClient:
    def __init__(self, runs: list[RunInfo]) -> None:
        self.runs = runs

    def iter_runs(self, experiment: str | None, page_size: int = 100) -> object:
        return iter(self.runs)

    def get_run(self, run_id: str) -> Run:
        raise NotFoundError(f"run {run_id!r} not found")

    def metric_history(self, run_id: str, key: str, ranks: object = None,
                       page_size: int = 0, page_token: str | None = None) -> MetricHistory:
        return MetricHistory(run_id=run_id, key=key, ranks=[0, 1], steps=[1, 1],
                             values=[0.5, 0.25], ts_ms=[T0, T0], next_page_token="t")


def test_commands_print_and_return_status(capsys: pytest.CaptureFixture[str]) -> None:
    client: Any = _FakeClient([run_info(run_id=f"r{i}") for i in range(5)])
    assert runs.cmd_runs(client, None, 2, True) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r0", "r1"]
    assert runs.cmd_show(client, "zz", False) == 1
    assert "runstream: error: run 'zz' not found" in capsys.readouterr().err
    assert metrics.cmd_history(client, "r", "loss", None, 10, False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["RANK", "STEP", "VALUE", "TIME", "(UTC)"] and len(lines) == 3


def _ranks(n: int, per_node: int) -> tuple[RankInfo, ...]:
    return tuple(RankInfo(rank=r, local_rank=r % per_node, node=f"gpu-{r // per_node:02d}",
                          status="FINISHED", start_ms=1, end_ms=2, error="") for r in range(n))


def _run(run_id: str = "r1", world_size: int = 4, per_node: int = 4, **env: Any) -> Run:
    recorded = {
        "python_version": "3.11.9", "os": "Linux-6.5",
        "command": "/home/alice/vision/.venv/bin/python3 /home/alice/vision/train.py"
                   " --config /home/alice/vision/configs/a.yaml --data=/datasets/imagenet"
                   " --lr 0.1",
        "packages": (Package(name="numpy", version="1.26.4"), Package(name="pip", version="24"),
                     Package(name="runstream", version="0.1.0"),
                     Package(name="torch", version="2.4.0+cu121"),
                     Package(name="mylib", version="0.3.dev2+g1a2b")),
        "cuda_version": "12.4", "gpus": (Gpu(name="H100", memory_bytes=80 << 30),),
    }
    recorded.update(env)
    return Run(
        info=RunInfo(run_id=run_id, experiment="e", name="n", status="FINISHED", start_ms=1,
                     end_ms=2, world_size=world_size),
        params=(Param(key="lr", value="0.1", type="FLOAT"),),
        inputs=(Input(name="train", uri="s3://b/train", digest="sha256:ab", role="train"),),
        ranks=_ranks(world_size, per_node),
        code=CodeVersion(git_commit="abc123", git_remote="git@github.com:acme/vision.git",
                         git_dirty=True, in_git_repo=True, diff_sha256="ff",
                         diff_uri="file:///home/alice/.runstream/artifacts/ff"),
        env=Environment(**recorded),
    )


def test_reproduce_text_is_runnable_elsewhere() -> None:
    text = reproduce_text(_run())
    lines = text.splitlines()
    for needle in ("git clone git@github.com:acme/vision.git repo && cd repo",
                   "git checkout abc123", "git apply run.diff",
                   "python3.11 -m venv .venv && . .venv/bin/activate",
                   "  numpy==1.26.4 \\", "  torch==2.4.0", "digest sha256:ab", "lr=0.1",
                   "1x H100 (80.0 GiB)", "# launcher not recorded: assumed torchrun"):
        assert needle in text, needle
    # The launch line: torchrun with the world size, paths relative to the clone's root.
    assert lines[-1] == ("torchrun --nnodes 1 --nproc-per-node 4 train.py --config"
                         " configs/a.yaml --data=/datasets/imagenet --lr 0.1")
    commands = [line for line in lines if not line.startswith("#")]
    assert not any("/home/alice" in line for line in commands)
    assert "outside the repository: make them exist here or change them: /datasets/imagenet" \
        in text
    # runstream is never pinned from the record (a local editable build reports 0.1.0 too),
    # nor a development build, nor pip.
    assert "runstream==" not in text and "pip install runstream" in text
    assert "# not pinned: mylib 0.3.dev2+g1a2b" in text and "mylib==" not in text
    assert "pip==" not in text


def test_reproduce_launch_line_from_the_ranks_recorded() -> None:
    two_nodes = reproduce_text(_run(world_size=8, per_node=4)).splitlines()
    assert two_nodes[-1].startswith(
        'torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint'
        ' "$MASTER_ADDR:29500" train.py')
    assert "# on each of the 2 nodes" in "\n".join(two_nodes)
    mpi = runs.launch_of(_run(run_id="mpi-job7", world_size=8, per_node=4))
    assert (mpi.kind, mpi.nnodes, mpi.nproc_per_node) == ("mpirun", 2, 4)
    assert "mpirun inferred from the run id" in mpi.note
    slurm = runs.launch_of(_run(run_id="slurm-42.0", world_size=8, per_node=8))
    assert slurm.kind == "torchrun" and "srun --nodes 1 --ntasks-per-node 8" in slurm.note
    single = reproduce_text(_run(world_size=1, per_node=1)).splitlines()
    assert single[-1].startswith("python train.py --config configs/a.yaml")
    # Ranks that never reported still count: of 8 ranks only 0 and 3 (local rank 3) did.
    partial = dataclasses.replace(_run(world_size=8, per_node=4),
                                  ranks=tuple(_ranks(4, 4)[i] for i in (0, 3)))
    launch = runs.launch_of(partial)
    assert (launch.world_size, launch.nnodes, launch.nproc_per_node) == (8, 2, 4)


def test_reproduce_without_a_known_root_says_so() -> None:
    text = reproduce_text(_run(command="/usr/bin/python3 train.py --lr 0.1", packages=()))
    assert "# run from the repository root (the original working directory was not recorded)" \
        in text
    assert text.splitlines()[-1] == "torchrun --nnodes 1 --nproc-per-node 4 train.py --lr 0.1"
    assert "pip install" not in text


def test_reproduce_json_has_the_parts(capsys: pytest.CaptureFixture[str]) -> None:
    class Client:
        def get_run(self, run_id: str) -> Run:
            return _run(run_id=run_id)

    assert runs.cmd_reproduce(cast(Any, Client()), "r9", True) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["run_id"] == "r9" and plan["launch"]["world_size"] == 4
    assert plan["launch"]["kind"] == "torchrun" and plan["requirements"] == [
        "numpy==1.26.4", "torch==2.4.0"]
    assert plan["command"].startswith("torchrun --nnodes 1 --nproc-per-node 4 train.py")
    assert plan["foreign_paths"] == ["/datasets/imagenet"] and "git clone" in plan["script"]


def test_show_prints_drops_the_account_and_param_conflicts() -> None:
    from runstream.query.models import Drop, Param, ParamConflict, RankInfo, Run

    def rank(n: int, **kw: Any) -> RankInfo:
        return RankInfo(rank=n, local_rank=n, node="n", status="FINISHED", start_ms=T0,
                        end_ms=T0 + 1, error="", **kw)

    run = Run(
        info=run_info(world_size=2),
        params=(Param(key="lr", value="0.1", type="FLOAT"),),
        param_conflicts=(ParamConflict(key="lr", rank=0, value="0.2", type="FLOAT",
                                       producer_id="p2", ts_ms=T0),),
        ranks=(rank(0, points_logged=70_300, points_stored=200, producers_finished=1,
                    dropped=(Drop(reason="spool write failed: ENOSPC", events=70,
                                  points=70_000),)),
               rank(1, points_stored=50)),
    )
    text = runs.run_text(run, T0)
    assert "70,000 points dropped (spool write failed: ENOSPC)" in text
    assert "100 points logged but neither stored nor counted as dropped" in text
    assert "250 points stored, 70,300 logged" in text
    assert "param lr: 0.1 (also logged: 0.2 by producer p2 at 2023-11-14 22:13:20 UTC)" in text
    quiet = runs.run_text(Run(info=run_info(), ranks=(rank(0),)), T0)
    assert "Points\n  (none)" in quiet and "dropped" not in quiet


def _recorded_torchrun_run(**env: Any) -> Run:
    """A 4-rank torchrun run (one node) as an SDK that records its launch reports it:
    started from experiments/ of the clone, an argument with a space in it."""
    recorded: dict[str, Any] = {
        "argv": ("/home/alice/vision/experiments/train.py", "--name", "two words",
                 "--config", "/home/alice/vision/configs/a.yaml", "--data=/datasets/imagenet"),
        "launcher": "torchrun", "nnodes": 1, "nproc_per_node": 4,
        "command": "/home/alice/vision/.venv/bin/python3 /home/alice/vision/experiments/"
                   "train.py --name two words --config /home/alice/vision/configs/a.yaml"
                   " --data=/datasets/imagenet",
        "packages": (Package(name="numpy", version="1.26.4"),
                     Package(name="runstream", version="0.2.0")),
        "gpus": (), "cuda_version": "",
    }
    recorded.update(env)
    run = _run(**recorded)
    return dataclasses.replace(run, code=dataclasses.replace(
        run.code, cwd="experiments", script="experiments/train.py", git_dirty=False))


def test_reproduce_a_recorded_torchrun_run_uses_the_recorded_launch() -> None:
    plan = runs.reproduction(_recorded_torchrun_run())
    assert plan.script.splitlines() == [
        "# Reproduce run r1 (e, n)",
        "git clone git@github.com:acme/vision.git repo && cd repo",
        "git checkout abc123",
        "# python 3.11.9 on Linux-6.5",
        "python3.11 -m venv .venv && . .venv/bin/activate",
        "pip install \\",
        "  numpy==1.26.4 \\",
        "  runstream==0.2.0",
        "# input train train: s3://b/train digest sha256:ab",
        "# params: lr=0.1",
        "cd experiments  # the recorded working directory, relative to the repository root",
        "# absolute paths of the original machine, outside the repository: make them exist"
        " here or change them: /datasets/imagenet",
        "torchrun --nnodes 1 --nproc-per-node 4 train.py --name 'two words' --config"
        " ../configs/a.yaml --data=/datasets/imagenet",
    ]
    assert plan.launch == runs.Launch(kind="torchrun", world_size=4, nnodes=1,
                                      nproc_per_node=4, recorded=True)
    assert "guessed" not in plan.script and "assumed" not in plan.script


def test_reproduce_recorded_launchers_and_shapes() -> None:
    def last(**env: Any) -> str:
        return runs.reproduction(_recorded_torchrun_run(**env)).script.splitlines()[-1]

    tail = "train.py --name 'two words' --config ../configs/a.yaml --data=/datasets/imagenet"
    assert last(launcher="slurm", nnodes=2, nproc_per_node=2) == \
        f"srun -N 2 --ntasks-per-node 2 python {tail}"
    assert last(launcher="openmpi", nnodes=2, nproc_per_node=2) == \
        f"mpirun -np 4 --map-by ppr:2:node python {tail}"
    assert last(launcher="pmi", nnodes=1, nproc_per_node=4) == f"mpiexec -n 4 -ppn 4 python {tail}"
    two = runs.reproduction(_recorded_torchrun_run(nnodes=2, nproc_per_node=2)).script
    assert two.splitlines()[-1] == ("torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d"
                                    f' --rdzv-endpoint "$MASTER_ADDR:29500" {tail}')
    # A launcher that did not state its shape: inferred from the ranks, and said so.
    plan = runs.reproduction(_recorded_torchrun_run(nnodes=0, nproc_per_node=0))
    assert plan.launch.nproc_per_node == 4 and "did not state the job's shape" in plan.script
    # python -m under torchrun, an editable runstream left unpinned.
    module = runs.reproduction(_recorded_torchrun_run(
        argv=("-m", "vision.train", "--lr", "0.1"), runstream_editable=True))
    assert module.command == "torchrun --nnodes 1 --nproc-per-node 4 -m vision.train --lr 0.1"
    assert "runstream==" not in module.script
    assert "# not pinned: runstream 0.2.0: an editable install" in module.script


def test_reproduce_a_run_recorded_before_says_it_guesses() -> None:
    text = reproduce_text(_run())
    assert "# recorded before runstream kept the launcher, argv and working directory: the" \
        " line below is guessed from the command line" in text
