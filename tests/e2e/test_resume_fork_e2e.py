"""Resume, fork and DVC inputs through the whole pipeline: the SDK (this process, and rank
processes of a torchrun-shaped job) spools locally, a real `runstream serve` (its own
process: spool ingest + embedded ClickHouse + gRPC, with a bearer token) stores the
events, and the SDK's resume/fork look-ups and the checks read them back through
runstream.query.Client.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream import resume as resume_mod
from runstream.proto.errors import ConfigError, InvalidArgumentError, NotFoundError
from runstream.query import models
from runstream.query.client import Client
from tests.e2e.resume_rank import value
from tests.helpers import free_port, local_store_env, serving, wait_for
from tests.unit.test_producer_dvc import DVC_LOCK, TRAIN_CSV, TRAIN_DVC

HERE = Path(__file__).resolve().parent
TOKEN = "e2e-resume-token"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running `runstream serve` on the spool; yields the environment its SDK users get
    (spool dir, query address, token; no system-metrics sampler)."""
    root = tmp_path_factory.mktemp("resume-fork")
    env = local_store_env(root, RUNSTREAM_TOKEN=TOKEN, RUNSTREAM_SYSTEM_METRICS_S="0")
    with serving(env, root / "serve.log"):
        yield env


@pytest.fixture
def client(serve: dict[str, str]) -> Iterator[Client]:
    with Client(serve["RUNSTREAM_QUERY_ADDR"], timeout_s=60, environ=serve) as c:
        yield c


@pytest.fixture
def sdk_env(serve: dict[str, str]) -> Iterator[dict[str, str]]:
    """What runstream.init(environ=...) gets in this process; a run left active is
    finished after the test."""
    yield {k: v for k, v in serve.items() if k.startswith("RUNSTREAM_")}
    active = runstream.active_run()
    if active is not None:
        active.finish()


def run_or_none(client: Client, run_id: str) -> models.Run | None:
    try:
        return client.get_run(run_id)
    except NotFoundError:
        return None


def stored(client: Client, run_id: str, key: str, last_step: int,
           status: str = "FINISHED") -> models.Run:
    """The run once its status is ``status`` and ``key``'s points reach ``last_step``."""
    def done(run: models.Run | None) -> bool:
        if run is None or run.info.status != status:
            return False
        steps = [m.last_step for m in run.metrics if m.key == key]
        return steps == [last_step]

    run = wait_for(lambda: run_or_none(client, run_id), done, timeout_s=120,
                   what=f"{run_id} {status} with {key} up to step {last_step}")
    assert run is not None
    return run


def points(client: Client, run_id: str, key: str, **kwargs: Any) -> list[tuple[int, float]]:
    history = client.metric_history(run_id, key, **kwargs)
    return list(zip(history.steps, history.values, strict=True))


# --- resume -------------------------------------------------------------------------------


def finished_then_resumed(client: Client, sdk_env: dict[str, str]) -> str:
    """A run of steps 0..9 that finished, then resumed for 5 more steps without step=;
    returns its id once both attempts are stored."""
    run_id = f"resume-{uuid.uuid4().hex[:8]}"
    with runstream.init("e2e-resume", name="first", run_id=run_id, params={"lr": 0.1},
                        environ=sdk_env) as run:
        for i in range(10):
            run.log({"loss": float(i)})
    stored(client, run_id, "loss", 9)

    run = runstream.init("e2e-resume", run_id=run_id, resume=True, params={"lr": 0.1},
                         environ=sdk_env)
    assert (run.resumed, run.start_step, run.name) == (True, 10, "first")
    run.log({"loss": 100.0})
    run.flush()
    stored(client, run_id, "loss", 10, status="RUNNING")
    for i in range(1, 5):
        run.log({"loss": 100.0 + i})
    assert run.finish()
    stored(client, run_id, "loss", 14)
    return run_id


def test_a_resumed_run_continues_its_steps_and_is_finished_again(
        client: Client, sdk_env: dict[str, str]):
    run_id = finished_then_resumed(client, sdk_env)
    assert points(client, run_id, "loss") == \
        [(s, float(s)) for s in range(10)] + [(10 + i, 100.0 + i) for i in range(5)]
    run = client.get_run(run_id)
    assert run.info.name == "first"
    assert {p.key: p.value for p in run.params} == {"lr": "0.1"}
    assert not run.param_conflicts


def test_a_resumed_run_has_two_attempts(client: Client, sdk_env: dict[str, str]):
    run_id = finished_then_resumed(client, sdk_env)
    run: Any = client.get_run(run_id)
    assert run.info.attempts == 2
    assert [(a.attempt, a.resume, a.status) for a in run.attempts] == \
        [(0, False, "FINISHED"), (1, True, "FINISHED")]


def test_a_changed_param_on_resume_raises_at_the_call(client: Client, sdk_env: dict[str, str]):
    run_id = f"resume-param-{uuid.uuid4().hex[:8]}"
    with runstream.init("e2e-resume", run_id=run_id, params={"lr": 0.1, "opt": {"name": "sgd"}},
                        environ=sdk_env) as run:
        run.log({"loss": 1.0})
    stored(client, run_id, "loss", 0)
    with pytest.raises(InvalidArgumentError, match=r"'lr' was already logged as '0\.1'"):
        runstream.init("e2e-resume", run_id=run_id, resume=True, params={"lr": 0.2},
                       environ=sdk_env)
    assert runstream.active_run() is None
    run = runstream.init("e2e-resume", run_id=run_id, resume=True, environ=sdk_env)
    run.log_params({"opt.name": "sgd", "batch": 32})  # as stored, and a new one: fine
    with pytest.raises(InvalidArgumentError, match=r"'opt\.name'"):
        run.log_params({"opt": {"name": "adam"}})
    run.log({"loss": 0.5})
    assert run.finish()
    stored(client, run_id, "loss", 1)
    # The resumed attempt's rows may land in separate inserts (the first attempt's FINISHED
    # and the new point can be there before its params): wait for the params too.
    want = {"lr": "0.1", "opt.name": "sgd", "batch": "32"}
    after = wait_for(lambda: run_or_none(client, run_id),
                     lambda r: r is not None and {p.key: p.value for p in r.params} == want,
                     timeout_s=60, what=f"{run_id}'s params {want}")
    assert after is not None and not after.param_conflicts


def test_resume_of_an_unknown_run_is_refused(sdk_env: dict[str, str]):
    with pytest.raises(ConfigError, match="no run never-logged-1 to resume"):
        runstream.init("e2e-resume", run_id="never-logged-1", resume=True, environ=sdk_env)
    assert runstream.active_run() is None


def test_without_a_service_or_the_token_a_resume_goes_on_from_start_step(
        client: Client, sdk_env: dict[str, str], caplog: pytest.LogCaptureFixture):
    nobody = {**sdk_env, "RUNSTREAM_QUERY_ADDR": f"127.0.0.1:{free_port()}"}
    found = resume_mod.read_run("anything", nobody, purpose="resume")
    assert found.prior is None and "no query service answered" in found.unavailable
    wrong_token = {**sdk_env, "RUNSTREAM_TOKEN": "not-the-token"}
    found = resume_mod.read_run("anything", wrong_token, purpose="resume")
    assert found.prior is None and "did not answer GetRun" in found.unavailable

    run_id = f"resume-blind-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run = runstream.init("e2e-resume", run_id=run_id, resume=True, start_step=7,
                             environ=nobody)
    assert [r for r in caplog.records if run_id in r.getMessage()]
    run.log({"loss": 1.0})
    assert run.finish()
    stored(client, run_id, "loss", 7)  # the spool still reaches serve


def run_job(env: dict[str, str], run_id: str, world_size: int, steps: int, attempt: int,
            extra: dict[str, str]) -> None:
    procs = [subprocess.Popen(
        [sys.executable, str(HERE / "resume_rank.py"), str(steps), str(attempt)],
        env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world_size),
             "LOCAL_WORLD_SIZE": str(world_size), "TORCHELASTIC_RUN_ID": run_id, **extra},
    ) for r in range(world_size)]
    assert [p.wait(timeout=120) for p in procs] == [0] * world_size


def resumed_job(client: Client, serve: dict[str, str]) -> str:
    """Two torchrun ranks log 20 steps; the job is started again with RUNSTREAM_RESUME=1
    as torchrun's first restart, and each rank logs 20 more without step=."""
    run_id = f"resume-job-{uuid.uuid4().hex[:8]}"
    run_job(serve, run_id, 2, 20, 0, {"TORCHELASTIC_RESTART_COUNT": "0"})
    wait_for(lambda: run_or_none(client, run_id),
             lambda r: r is not None and r.info.status == "FINISHED"
             and [m.last_step for m in r.metrics] == [19]
             and len(client.metric_history(r.info.run_id, "loss").steps) == 40,
             timeout_s=120, what="the first attempt stored")
    run_job(serve, run_id, 2, 20, 1,
            {"TORCHELASTIC_RESTART_COUNT": "1", "RUNSTREAM_RESUME": "1"})
    wait_for(lambda: client.metric_history(run_id, "loss"),
             lambda h: len(h.steps) == 80, timeout_s=120, what="the second attempt stored")
    # Its points can be queryable before its start and status rows are: a batch's tables
    # are inserted one after another, and FINISHED alone is the first attempt's too.
    wait_for(lambda: client.get_run(run_id),
             lambda r: len(r.attempts) == 2 and r.info.status == "FINISHED",
             timeout_s=120, what="the second attempt started and FINISHED")
    return run_id


def test_the_ranks_of_a_resumed_job_continue_their_steps(client: Client,
                                                         serve: dict[str, str]):
    run_id = resumed_job(client, serve)
    for rank in (0, 1):
        history = client.metric_history(run_id, "loss", ranks=[rank])
        assert list(zip(history.steps, history.values, strict=True)) == \
            [(i, value(rank, 0, i)) for i in range(20)] + \
            [(20 + i, value(rank, 1, i)) for i in range(20)]
    run = wait_for(lambda: client.get_run(run_id),
                   lambda r: r.info.status == "FINISHED", what="FINISHED again")
    assert {p.key: p.value for p in run.params} == {"lr": "0.1"}


def test_a_resumed_job_has_an_attempt_per_start_with_the_restart_count(
        client: Client, serve: dict[str, str]):
    run_id = resumed_job(client, serve)
    run: Any = wait_for(lambda: client.get_run(run_id),
                        lambda r: r.info.status == "FINISHED", what="FINISHED again")
    assert [(a.attempt, a.restart, a.resume, a.world_size, sorted(a.ranks))
            for a in run.attempts] == [(0, 0, False, 2, [0, 1]), (1, 1, True, 2, [0, 1])]


# --- fork ---------------------------------------------------------------------------------


def test_a_forks_history_is_its_parents_up_to_the_fork_step_then_its_own(
        client: Client, sdk_env: dict[str, str]):
    parent = f"parent-{uuid.uuid4().hex[:8]}"
    with runstream.init("e2e-fork", run_id=parent, params={"lr": 0.1},
                        environ=sdk_env) as run:
        for i in range(100):
            run.log({"loss": float(i)})
    stored(client, parent, "loss", 99)
    with runstream.init("e2e-fork", fork_from=(parent, 49), params={"lr": 0.01},
                        environ=sdk_env) as child:
        assert child.start_step == 50 and child.id != parent
        for i in range(50, 100):
            child.log({"loss": 1000.0 + i})  # no step=: 50, 51, ...
    stored(client, child.id, "loss", 99)
    own = [(s, 1000.0 + s) for s in range(50, 100)]
    assert points(client, child.id, "loss", own_points_only=True) == own
    assert points(client, child.id, "loss") == [(s, float(s)) for s in range(50)] + own
    assert points(client, parent, "loss") == [(s, float(s)) for s in range(100)]
    run = client.get_run(child.id)
    assert (run.info.fork_run_id, run.info.fork_step) == (parent, 49)
    # The parent's params are not copied: the fork has its own.
    assert {p.key: p.value for p in run.params} == {"lr": "0.01"}


def test_a_fork_of_an_unknown_run_is_refused(sdk_env: dict[str, str]):
    with pytest.raises(ConfigError, match="no run never-logged-2 to fork from"):
        runstream.init("e2e-fork", fork_from=("never-logged-2", 3), environ=sdk_env)
    assert runstream.active_run() is None


# --- DVC inputs (the files a real DVC 3 wrote, kept by tests/unit/test_producer_dvc.py) --


def test_dvc_inputs_keep_dvcs_md5(client: Client, sdk_env: dict[str, str], tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_bytes(TRAIN_CSV)
    (tmp_path / "data" / "train.csv.dvc").write_text(TRAIN_DVC)  # as `dvc add` wrote it
    (tmp_path / "dvc.lock").write_text(DVC_LOCK)
    run_id = f"dvc-{uuid.uuid4().hex[:8]}"
    with runstream.init("e2e-dvc", run_id=run_id, environ=sdk_env) as run:
        run.log_input(tmp_path / "data" / "train.csv.dvc")
        run.log_input(tmp_path / "dvc.lock", stage="prepare")
        run.log({"loss": 1.0})
    stored_run = stored(client, run_id, "loss", 0)
    root = tmp_path.resolve()
    assert sorted((i.name, i.uri, i.digest, i.role) for i in stored_run.inputs) == sorted([
        ("train.csv", (root / "data/train.csv").as_uri(),
         "md5:b202f333fba4fd38d4b8e5e693077aab", "train"),
        ("data/train.csv", (root / "data/train.csv").as_uri(),
         "md5:b202f333fba4fd38d4b8e5e693077aab", "train"),
        ("prep.py", (root / "prep.py").as_uri(), "md5:05b53e21236e0a75d57672875a7136fc",
         "train"),
        ("out/prepared", (root / "out/prepared").as_uri(),
         "md5:f43e9e033aaa003c8f0747a0613fb5b1.dir", "output"),
    ])
