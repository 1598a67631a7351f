"""runstream.telemetry: StepTimer's step times, data waits and device memory, logged through
run.log (a fake run, a fake clock); the GPU of each rank; nvidia-smi never waited for."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from runstream import telemetry
from runstream.proto.config import (
    TELEMETRY_DATA_WAIT,
    TELEMETRY_DEVICE_MEMORY,
    TELEMETRY_STEP_TIME,
)
from runstream.telemetry import DeviceMemory, StepTimer, device_of, parse_memory_used

STEP, WAIT, MEM = TELEMETRY_STEP_TIME, TELEMETRY_DATA_WAIT, TELEMETRY_DEVICE_MEMORY


class FakeRun:
    def __init__(self, local_rank: int = 0) -> None:
        self.local_rank = local_rank
        self.logged: list[tuple[int | None, dict[str, float]]] = []

    def log(self, metrics: Mapping[str, float | int], step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def timer(run: FakeRun, clock: FakeClock, **kw: Any) -> StepTimer:
    return StepTimer(run, clock=clock, device_memory=False, **kw)


def test_step_time_and_data_wait_from_the_second_step() -> None:
    run, clock = FakeRun(), FakeClock()
    t = timer(run, clock)
    t.start_step(0)
    clock.advance(0.25)
    t.end_step()
    clock.advance(0.05)  # fetching the next batch
    t.start_step(1)
    clock.advance(0.5)
    t.end_step()
    assert run.logged == [(0, {STEP: 0.25}), (1, {STEP: 0.5, WAIT: pytest.approx(0.05)})]
    assert all(type(v) is float for _, m in run.logged for v in m.values())  # log's fast path


def test_context_manager_and_a_failed_step() -> None:
    run, clock = FakeRun(), FakeClock()
    t = timer(run, clock)
    with t.step(7):
        clock.advance(0.1)
    with pytest.raises(RuntimeError), t.step(8):
        clock.advance(0.2)
        raise RuntimeError("OOM")
    clock.advance(0.3)
    with t.step(9):
        clock.advance(0.1)
    # The failed step logs nothing; the next one's wait runs from the last logged end.
    assert run.logged == [(7, {STEP: pytest.approx(0.1)}),
                          (9, {STEP: pytest.approx(0.1), WAIT: pytest.approx(0.5)})]


def test_a_step_left_open_ends_at_the_next_start_and_end_alone_does_nothing() -> None:
    run, clock = FakeRun(), FakeClock()
    t = timer(run, clock)
    t.end_step()
    t.start_step(0)
    clock.advance(0.4)
    t.start_step(1)  # no end_step for 0
    clock.advance(0.1)
    t.end_step()
    t.end_step()
    assert run.logged == [(0, {STEP: pytest.approx(0.4)}),
                          (1, {STEP: pytest.approx(0.1), WAIT: 0.0})]


def test_reset_forgets_the_pause() -> None:
    run, clock = FakeRun(), FakeClock()
    t = timer(run, clock)
    with t.step(0):
        clock.advance(0.1)
    clock.advance(60)  # evaluation
    t.reset()
    with t.step(1):
        clock.advance(0.1)
    assert run.logged[1] == (1, {STEP: pytest.approx(0.1)})


@pytest.mark.parametrize(("visible", "local_rank", "device"), [
    (None, 3, "3"),
    ("2,3", 1, "3"),
    ("5", 3, "5"),  # one device per rank (SLURM --gpus-per-task, a per-rank launcher)
    ("GPU-aaa,GPU-bbb", 1, "GPU-bbb"),
    ("MIG-x", 0, "MIG-x"),
    ("0,1", 4, ""),
    ("", 0, ""),
    ("-1", 0, ""),
    ("0,-1,2", 2, "0"),  # CUDA stops at the first invalid entry: one device left
    (" 4 , 6 ", 1, "6"),
])
def test_each_rank_reads_its_own_gpu(visible: str | None, local_rank: int, device: str) -> None:
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert device_of(local_rank, environ) == device


class FakeNvml:
    def __init__(self) -> None:
        self.used = 1 << 30
        self.handles: list[Any] = []
        self.reads = 0

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self.handles.append(("index", index))
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        self.handles.append(("uuid", uuid))
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self.reads += 1
        return types.SimpleNamespace(used=self.used, total=80 << 30)


def test_device_memory_from_nvml_at_most_every_interval() -> None:
    run, clock, nvml = FakeRun(), FakeClock(), FakeNvml()
    memory = DeviceMemory("2", interval_s=5.0, clock=clock, nvml=nvml)
    assert memory.source == "nvml" and nvml.handles == [("index", 2)]
    t = StepTimer(run, clock=clock, memory=memory)
    for step in range(12):
        with t.step(step):
            clock.advance(1.0)
        nvml.used += 1
    sampled = [(s, m[MEM]) for s, m in run.logged if MEM in m]
    assert sampled == [(0, float(1 << 30)), (5, float((1 << 30) + 5)),
                       (10, float((1 << 30) + 10))]
    assert nvml.reads == 3
    assert DeviceMemory("GPU-abc", clock=clock, nvml=nvml).source == "nvml"
    assert nvml.handles[-1] == ("uuid", "GPU-abc")


def test_no_device_no_source_and_device_memory_off() -> None:
    nvml = FakeNvml()
    assert DeviceMemory("", nvml=nvml).source == "" and nvml.handles == []
    assert DeviceMemory("", nvml=nvml).poll() is None
    run, clock = FakeRun(), FakeClock()
    t = StepTimer(run, clock=clock, device_memory=False)
    with t.step(0):
        clock.advance(0.1)
    assert set(run.logged[0][1]) == {STEP}


def fake_smi(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def poll_until(memory: DeviceMemory, clock: FakeClock) -> tuple[float | None, int]:
    """Poll as end_step does, with the clock moving 0.01 s a poll, until a sample comes."""
    deadline = time.monotonic() + 30
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        value = memory.poll()
        if value is not None:
            return value, polls
        clock.advance(0.01)
        time.sleep(0.01)
    return None, polls


def test_nvidia_smi_runs_in_the_background_of_the_steps(tmp_path: Path) -> None:
    clock = FakeClock()
    args = tmp_path / "args"
    smi = fake_smi(tmp_path, f'echo "$@" > {args}\necho 2048')
    memory = DeviceMemory("3", interval_s=60.0, clock=clock, nvml=False, nvidia_smi=smi)
    assert memory.source == "nvidia-smi"
    started = time.monotonic()
    assert memory.poll() is None  # started, not waited for
    assert time.monotonic() - started < 5
    value, polls = poll_until(memory, clock)
    assert value == 2048 * 1024 * 1024 and polls >= 1
    assert args.read_text().split() == ["--id=3", "--query-gpu=memory.used",
                                        "--format=csv,noheader,nounits"]
    assert memory.poll() is None  # the next sample is 60 s away
    memory.close()


def test_a_hung_nvidia_smi_is_killed_and_a_broken_one_gives_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_NVIDIA_SMI_TIMEOUT_S", 0.05)
    clock = FakeClock()
    hung = DeviceMemory("0", interval_s=0.0, clock=clock, nvml=False,
                        nvidia_smi=fake_smi(tmp_path, "exec sleep 60"))
    assert hung.poll() is None
    proc = hung._proc
    assert proc is not None
    clock.advance(1.0)
    assert hung.poll() is None and hung._proc is None and proc.returncode is not None
    broken = DeviceMemory("0", interval_s=0.0, clock=clock, nvml=False,
                          nvidia_smi=fake_smi(tmp_path, "echo '[N/A]'"))
    assert broken.poll() is None
    proc = broken._proc
    assert proc is not None
    proc.wait(timeout=30)
    assert broken.poll() is None and broken._proc is None  # read, and nothing in it
    assert parse_memory_used("[N/A]") is None and parse_memory_used("") is None
    assert parse_memory_used("10\n") == 10 * 1024 * 1024


def test_torch_memory_only_when_torch_is_imported_and_cuda_initialised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = types.SimpleNamespace(is_initialized=lambda: False, memory_allocated=lambda: 4096)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    run, clock = FakeRun(), FakeClock()
    t = StepTimer(run, clock=clock, memory=DeviceMemory(""), memory_interval_s=0.0)
    with t.step(0):
        clock.advance(0.1)
    cuda.is_initialized = lambda: True
    with t.step(1):
        clock.advance(0.1)
    assert telemetry.TORCH_ALLOCATED not in run.logged[0][1]
    assert run.logged[1][1][telemetry.TORCH_ALLOCATED] == 4096.0


def test_a_timer_reads_the_runs_local_rank_and_importing_loads_no_gpu_library() -> None:
    t = StepTimer(FakeRun(local_rank=1), environ={"CUDA_VISIBLE_DEVICES": "4,5"})
    assert t._memory is not None and t._memory.device == "5"
    t.close()
    code = ("import sys, runstream.telemetry; "
            "assert not {'torch', 'pynvml'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
