"""init(resume=True) and init(fork_from=...) within one process, on the local spool: what
RunStarted records, where log() without step= continues, params a resume must keep, and
what runstream.resume makes of the query service's answers (a stand-in client module;
the real service is in tests/e2e/test_resume_fork_e2e.py)."""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream import resume as resume_mod
from runstream.proto.errors import (
    ConfigError,
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import MAX_STEP, validate
from runstream.query import models
from tests.helpers import read_spool, steps_of


class Reads:
    """Stands in for runstream.resume.read_run: answers with ``answer`` and keeps the
    (run id, purpose) of every call."""

    def __init__(self, answer: resume_mod.Lookup) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    def __call__(self, run_id: str, environ: Mapping[str, str], *,
                 purpose: str) -> resume_mod.Lookup:
        self.calls.append((run_id, purpose))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def stored(last_step: int | None = 41, **fields: Any) -> resume_mod.Lookup:
    prior = resume_mod.PriorRun(
        run_id=fields.pop("run_id", "r-res"), experiment=fields.pop("experiment", "exp"),
        name=fields.pop("name", "first name"), last_step=last_step,
        params=fields.pop("params", {"lr": ("0.1", events_pb2.FLOAT)}), **fields)
    return resume_mod.Lookup(prior)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    """No query service is asked: every test says what it would have answered."""
    stand_in = Reads(stored())
    monkeypatch.setattr(resume_mod, "read_run", stand_in)
    yield stand_in


def started(events: list[events_pb2.RunEvent]) -> events_pb2.RunStarted:
    (start,) = [e.run_started for e in events if e.HasField("run_started")]
    return start


def logged_params(events: list[events_pb2.RunEvent]) -> list[tuple[str, str]]:
    return [(p.key, p.value) for e in events if e.HasField("params") for p in e.params.params]


def test_resume_continues_after_the_stored_step_with_the_stored_name_and_params(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    run = runstream.init("exp", run_id="r-res", resume=True, params={"lr": 0.1},
                         spool_dir=tmp_path, environ=env)
    assert (run.resumed, run.start_step, run.fork_from) == (True, 42, None)
    run.log({"loss": 1.0})
    run.log({"loss": 0.5})
    run.log_params({"lr": 0.1, "seed": 7})  # lr as stored: fine, and not sent again
    with pytest.raises(InvalidArgumentError, match=r"'lr' was already logged as '0.1'"):
        run.log_params({"lr": 0.2})
    assert run.finish()
    events = read_spool(tmp_path)
    for e in events:
        validate(e)
    assert reads.calls == [("r-res", "resume")]
    start = started(events)
    assert (start.resume, start.restart, start.name) == (True, 0, "first name")
    assert (start.fork_run_id, start.fork_step) == ("", 0)
    assert steps_of(events, "loss") == [42, 43]
    assert logged_params(events) == [("seed", "7")]


def test_resume_by_variable_with_the_run_id_of_the_environment(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    env = {**env, "RUNSTREAM_RESUME": "1", "RUNSTREAM_RUN_ID": "r-res"}
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    assert (run.id, run.resumed) == ("r-res", True)
    run.log({"loss": 1.0})
    run.finish()
    assert started(read_spool(tmp_path)).resume is True
    # resume=False overrides the variable: a plain start, nothing asked.
    reads.calls.clear()
    run = runstream.init("exp", resume=False, spool_dir=tmp_path / "2", environ=env)
    run.finish()
    assert reads.calls == [] and started(read_spool(tmp_path / "2")).resume is False


def test_resume_with_a_launcher_job_id_and_its_restart_count(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    # What torchrun sets in a worker after its third elastic restart (--rdzv-id r-res).
    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1", "ROLE_RANK": "0",
                "ROLE_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                "TORCHELASTIC_RUN_ID": "r-res", "TORCHELASTIC_RESTART_COUNT": "3",
                "TORCHELASTIC_MAX_RESTARTS": "3"}
    run = runstream.init("exp", resume=True, spool_dir=tmp_path, environ={**env, **torchrun})
    run.finish()
    assert reads.calls == [("r-res", "resume")]
    start = started(read_spool(tmp_path))
    assert (start.resume, start.restart) == (True, 3)


def test_resume_without_a_run_id_says_how_to_name_one(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    with pytest.raises(ConfigError, match=r"run_id=.*RUNSTREAM_RUN_ID"):
        runstream.init("exp", resume=True, spool_dir=tmp_path, environ=env)
    with pytest.raises(ConfigError, match="run_id="):
        runstream.init("exp", spool_dir=tmp_path, environ={**env, "RUNSTREAM_RESUME": "1"})
    assert reads.calls == [] and runstream.active_run() is None


def test_a_changed_param_on_resume_raises_at_init_and_starts_nothing(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    with pytest.raises(InvalidArgumentError, match="lr"):
        runstream.init("exp", run_id="r-res", resume=True, params={"lr": 0.2},
                       spool_dir=tmp_path, environ=env)
    assert runstream.active_run() is None
    assert read_spool(tmp_path) == []
    # The same value typed otherwise (int 1 vs float "1.0") is another value too.
    reads.answer = stored(params={"epochs": ("1.0", events_pb2.FLOAT)})
    with pytest.raises(InvalidArgumentError, match="epochs"):
        runstream.init("exp", run_id="r-res", resume=True, params={"epochs": 1},
                       spool_dir=tmp_path, environ=env)


def test_resume_in_another_experiment_raises(tmp_path: Path, env: dict[str, str],
                                             reads: Reads):
    with pytest.raises(InvalidArgumentError, match=r"'exp'.*'other'"):
        runstream.init("other", run_id="r-res", resume=True, spool_dir=tmp_path, environ=env)


def test_an_unknown_run_cannot_be_resumed(tmp_path: Path, env: dict[str, str], reads: Reads):
    reads.answer = ConfigError("no run r-res to resume")  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="no run r-res to resume"):
        runstream.init("exp", run_id="r-res", resume=True, spool_dir=tmp_path, environ=env)
    assert runstream.active_run() is None


def test_explicit_start_step_wins_and_a_run_without_points_starts_at_zero(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    run = runstream.init("exp", run_id="r-res", resume=True, start_step=10,
                         spool_dir=tmp_path, environ=env)
    run.log({"loss": 1.0})
    run.finish()
    assert steps_of(read_spool(tmp_path), "loss") == [10]
    reads.answer = stored(last_step=None)
    run = runstream.init("exp", run_id="r-res", resume=True, spool_dir=tmp_path / "2",
                         environ=env)
    run.log({"loss": 1.0})
    run.finish()
    assert steps_of(read_spool(tmp_path / "2"), "loss") == [0]


def test_resume_without_a_query_service_warns_once_and_leaves_params_to_the_server(
        tmp_path: Path, env: dict[str, str], reads: Reads, caplog: pytest.LogCaptureFixture):
    # What the run stored (lr 0.1) is unknown here: lr=0.2 is sent, the server keeps 0.1
    # and records 0.2 as a conflict.
    reads.answer = resume_mod.Lookup(None, "no query service answered at 127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run = runstream.init("exp", run_id="r-res", resume=True, params={"lr": 0.2},
                             start_step=5, spool_dir=tmp_path, environ=env)
        run.log({"loss": 1.0})
        run.finish()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "127.0.0.1:1" in warnings[0] and "start at 5" in warnings[0]
    assert "conflict" in warnings[0]
    events = read_spool(tmp_path)
    assert steps_of(events, "loss") == [5]
    assert started(events).name == ""
    assert logged_params(events) == [("lr", "0.2")]


def test_a_resumed_fork_keeps_its_parent(tmp_path: Path, env: dict[str, str], reads: Reads):
    reads.answer = stored(last_step=80, fork_run_id="parent-1", fork_step=49)
    run = runstream.init("exp", run_id="r-res", resume=True, spool_dir=tmp_path, environ=env)
    run.log({"loss": 1.0})
    run.finish()
    events = read_spool(tmp_path)
    start = started(events)
    assert (start.resume, start.fork_run_id, start.fork_step) == (True, "parent-1", 49)
    assert steps_of(events, "loss") == [81]


def test_fork_starts_a_new_run_after_the_fork_step(tmp_path: Path, env: dict[str, str],
                                                   reads: Reads):
    reads.answer = stored(run_id="parent-1", last_step=99)
    run = runstream.init("exp", fork_from=("parent-1", 49), params={"lr": 0.5},
                         spool_dir=tmp_path, environ=env)
    assert run.id != "parent-1"
    assert (run.fork_from, run.start_step, run.resumed) == (("parent-1", 49), 50, False)
    run.log({"loss": 1.0})
    run.log({"loss": 0.9})
    run.finish()
    events = read_spool(tmp_path)
    for e in events:
        validate(e)
    assert reads.calls == [("parent-1", "fork from")]
    start = started(events)
    assert (start.fork_run_id, start.fork_step, start.resume) == ("parent-1", 49, False)
    assert steps_of(events, "loss") == [50, 51]
    # The parent's params are not copied: the fork's own lr, nothing else.
    assert logged_params(events) == [("lr", "0.5")]


def test_fork_of_an_unknown_parent_raises_and_without_a_service_warns(
        tmp_path: Path, env: dict[str, str], reads: Reads, caplog: pytest.LogCaptureFixture):
    reads.answer = ConfigError("no run parent-1 to fork from")  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="no run parent-1 to fork from"):
        runstream.init("exp", fork_from=("parent-1", 0), spool_dir=tmp_path, environ=env)
    assert runstream.active_run() is None
    reads.answer = resume_mod.Lookup(None, "nothing at 127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run = runstream.init("exp", fork_from=["parent-1", 0], spool_dir=tmp_path,
                             environ=env)
    run.log({"loss": 1.0})
    run.finish()
    assert [r.getMessage() for r in caplog.records if "parent-1" in r.getMessage()]
    assert steps_of(read_spool(tmp_path), "loss") == [1]


@pytest.mark.parametrize("fork_from", [
    ("bad id!", 1), ("", 1), ("p" * 65, 1), ("parent-1", -1), ("parent-1", MAX_STEP + 1),
    ("parent-1", "3"), ("parent-1", 2.0), ("parent-1", True), ("parent-1",), "parent-1",
    ("parent-1", 1, 2),
])
def test_a_bad_fork_is_refused_at_init(fork_from: Any, tmp_path: Path, env: dict[str, str],
                                       reads: Reads):
    with pytest.raises(InvalidArgumentError):
        runstream.init("exp", fork_from=fork_from, spool_dir=tmp_path, environ=env)
    assert reads.calls == [] and runstream.active_run() is None


def test_fork_cannot_be_a_resume_or_its_own_parent(tmp_path: Path, env: dict[str, str],
                                                   reads: Reads):
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        runstream.init("exp", run_id="r-1", resume=True, fork_from=("parent-1", 3),
                       spool_dir=tmp_path, environ=env)
    with pytest.raises(InvalidArgumentError, match="RUNSTREAM_RESUME"):
        runstream.init("exp", run_id="r-1", fork_from=("parent-1", 3), spool_dir=tmp_path,
                       environ={**env, "RUNSTREAM_RESUME": "1"})
    with pytest.raises(InvalidArgumentError, match="itself"):
        runstream.init("exp", run_id="parent-1", fork_from=("parent-1", 3),
                       spool_dir=tmp_path, environ=env)
    assert reads.calls == []


@pytest.mark.parametrize("start_step", [-1, MAX_STEP + 1, "1", 1.5, True])
def test_a_bad_start_step_is_refused(start_step: Any, tmp_path: Path, env: dict[str, str]):
    with pytest.raises(InvalidArgumentError):
        runstream.init("exp", start_step=start_step, spool_dir=tmp_path, environ=env)


def test_start_step_of_a_plain_run(tmp_path: Path, env: dict[str, str]):
    run = runstream.init("exp", start_step=7, spool_dir=tmp_path, environ=env)
    run.log({"loss": 1.0})
    run.log({"loss": 1.0}, step=3)
    run.log({"loss": 1.0})
    run.finish()
    assert steps_of(read_spool(tmp_path), "loss") == [7, 3, 4]


# --- runstream.resume: what it makes of the query service's answers ------------------------


def a_run(**info: Any) -> models.Run:
    return models.Run(
        info=models.RunInfo(run_id="r-res", experiment="exp", name="n", status="FINISHED",
                            start_ms=1, end_ms=2, world_size=1, **info),
        params=tuple(models.Param(key=k, value=v, type=t) for k, v, t in (
            ("lr", "0.1", "FLOAT"), ("epochs", "3", "INT"), ("lr", "0.2", "FLOAT"),
            ("opt", "sgd", "STRING"))),
        metrics=tuple(models.MetricSummary(key=k, last=1.0, last_step=s, min=0.0, max=2.0)
                      for k, s in (("loss", 99), ("acc", 97), ("system/cpu_percent", 5000))),
    )


def test_prior_run_takes_the_highest_training_step_and_the_first_params():
    prior = resume_mod.prior_run(a_run())
    assert prior.last_step == 99  # system/* counts its own samples, not steps
    assert dict(prior.params) == {"lr": ("0.1", events_pb2.FLOAT),
                                  "epochs": ("3", events_pb2.INT),
                                  "opt": ("sgd", events_pb2.STRING)}
    assert (prior.experiment, prior.name, prior.fork_run_id) == ("exp", "n", "")
    empty = resume_mod.prior_run(dataclasses.replace(a_run(), metrics=()))
    assert empty.last_step is None


class StandInClient:
    """The parts of runstream.query.client.Client that read_run uses."""

    healthy_answer = True
    get_run_answer: Any = None
    made: list[StandInClient] = []

    def __init__(self, target: str | None = None, timeout_s: float = 30.0, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.environ = environ
        self.target = (environ or {}).get("RUNSTREAM_QUERY_ADDR", "127.0.0.1:50051")
        self.timeout_s = timeout_s
        self.closed = False
        self.asked: list[str] = []
        StandInClient.made.append(self)

    def healthy(self, timeout_s: float = 1.0) -> bool:
        assert timeout_s <= resume_mod.CONNECT_TIMEOUT_S
        return self.healthy_answer

    def get_run(self, run_id: str) -> models.Run:
        self.asked.append(run_id)
        if isinstance(self.get_run_answer, Exception):
            raise self.get_run_answer
        return self.get_run_answer

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def client_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[StandInClient]]:
    module = types.ModuleType("runstream.query.client")
    module.Client = StandInClient  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runstream.query.client", module)
    StandInClient.made = []
    StandInClient.healthy_answer = True
    StandInClient.get_run_answer = a_run()
    yield StandInClient


def test_read_run_asks_the_configured_service(client_module: type[StandInClient]):
    environ = {"RUNSTREAM_QUERY_ADDR": "10.0.0.1:7", "RUNSTREAM_TOKEN": "t"}
    found = resume_mod.read_run("r-res", environ, purpose="resume")
    assert found.unavailable == "" and found.prior is not None
    assert found.prior.last_step == 99
    (client,) = client_module.made
    assert client.environ is environ  # token and TLS CA as the client reads them
    assert client.asked == ["r-res"] and client.closed


def test_read_run_unknown_run_is_a_config_error(client_module: type[StandInClient]):
    client_module.get_run_answer = NotFoundError("run r-x not found")
    with pytest.raises(ConfigError, match="no run r-x to fork from"):
        resume_mod.read_run("r-x", {}, purpose="fork from")
    assert client_module.made[0].closed


@pytest.mark.parametrize("failure", ["unhealthy", "refused"])
def test_read_run_without_an_answer_says_why(failure: str,
                                             client_module: type[StandInClient]):
    if failure == "unhealthy":
        client_module.healthy_answer = False
    else:
        client_module.get_run_answer = UnauthenticatedError("missing bearer token")
    found = resume_mod.read_run("r-res", {"RUNSTREAM_QUERY_ADDR": "10.0.0.1:7"},
                                purpose="resume")
    assert found.prior is None
    assert "10.0.0.1:7" in found.unavailable
    if failure == "refused":
        assert "missing bearer token" in found.unavailable
    assert client_module.made[0].closed


def test_read_run_without_the_query_client_installed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "runstream.query.client", None)
    found = resume_mod.read_run("r-res", {}, purpose="resume")
    assert found.prior is None and "runstream[server]" in found.unavailable


def test_a_resumed_fork_without_points_of_its_own_goes_on_after_the_fork_step(
        tmp_path: Path, env: dict[str, str], reads: Reads):
    reads.answer = stored(last_step=None, fork_run_id="parent-1", fork_step=49)
    run = runstream.init("exp", run_id="r-res", resume=True, spool_dir=tmp_path, environ=env)
    run.log({"loss": 1.0})
    run.finish()
    assert steps_of(read_spool(tmp_path), "loss") == [50]


def test_a_fork_past_the_parents_last_step_warns(tmp_path: Path, env: dict[str, str],
                                                 reads: Reads,
                                                 caplog: pytest.LogCaptureFixture):
    reads.answer = stored(run_id="parent-1", last_step=20)
    with caplog.at_level(logging.WARNING, logger="runstream.run"):
        run = runstream.init("exp", fork_from=("parent-1", 49), spool_dir=tmp_path,
                             environ=env)
    run.finish()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "past the last step" in warning and "(20)" in warning
