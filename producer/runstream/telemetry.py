"""Per-rank step telemetry: how long each step took, how long it waited for data, and how
much device memory this rank's GPU holds, logged through ``Run.log`` on every rank.

``GetRankHealth`` (``runstream ranks RUN``) compares these across ranks to name the rank
that is slow or broken. The keys are :data:`runstream.proto.config.TELEMETRY_STEP_TIME`,
``TELEMETRY_DATA_WAIT`` and ``TELEMETRY_DEVICE_MEMORY``.

Device memory, sampled at most every ``memory_interval_s`` seconds, never in a thread:

* nvidia-ml-py (``import pynvml``, optional, imported on first use): the memory used on
  this rank's own GPU, a few microseconds per sample;
* else ``nvidia-smi`` (on PATH, as :mod:`runstream.system` finds it): started without
  waiting (``subprocess.Popen``, about a millisecond to spawn, once per interval) and read
  at a later ``end_step`` once it has exited, so no step waits for it to run; one still
  running after 5 s (the system sampler's limit) is killed;
* else nothing.

"This rank's GPU" is ordinal ``local_rank`` among the visible devices: the
``CUDA_VISIBLE_DEVICES`` entry at that position (a single visible device is every local
rank's own), or the physical index ``local_rank`` when the variable is unset. NVML
numbers devices in PCI bus order, as CUDA does with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.

When ``torch`` is already imported and has initialised CUDA, ``torch.cuda.memory_allocated()``
(bytes held by tensors on the current device) is logged too, as
:data:`TORCH_ALLOCATED`; torch is never imported here.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from runstream.proto.config import (
    TELEMETRY_DATA_WAIT,
    TELEMETRY_DEVICE_MEMORY,
    TELEMETRY_STEP_TIME,
)
from runstream.system import _NVIDIA_SMI_TIMEOUT_S

log = logging.getLogger(__name__)

#: Bytes torch's caching allocator holds for tensors on the current device.
TORCH_ALLOCATED = "telemetry/torch_allocated_bytes"
#: Seconds between two device-memory samples, at most one sample per step.
DEFAULT_MEMORY_INTERVAL_S = 5.0


class _Logs(Protocol):
    def log(self, metrics: Mapping[str, float | int], step: int | None = None) -> None: ...


def device_of(local_rank: int, environ: Mapping[str, str]) -> str:
    """This rank's GPU as nvidia-smi's ``--id`` and NVML take it: a physical index
    ("3") or a UUID ("GPU-..."/"MIG-..."); "" when CUDA_VISIBLE_DEVICES hides every
    device or has no entry for ``local_rank``. Pure."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(local_rank)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    # CUDA stops at the first invalid entry ("-1" hides everything).
    valid = []
    for entry in entries:
        if entry.lstrip("-").isdigit() and int(entry) < 0:
            break
        valid.append(entry)
    if len(valid) == 1:
        return valid[0]
    return valid[local_rank] if 0 <= local_rank < len(valid) else ""


class DeviceMemory:
    """Samples of the memory used on one GPU (bytes), by NVML, else nvidia-smi, else none.

    :meth:`poll` never blocks on a subprocess: it returns the last finished sample (once)
    or None. Not thread-safe: one per training loop.
    """

    def __init__(self, device: str, *, interval_s: float = DEFAULT_MEMORY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 nvml: Any = None, nvidia_smi: str | None = None) -> None:
        self.device = device
        self._interval_s = interval_s
        self._clock = clock
        self._next_s = clock()
        self._nvml = nvml
        self._handle: Any = None
        self._smi = nvidia_smi
        self._proc: subprocess.Popen[str] | None = None
        self._proc_deadline_s = 0.0
        self.source = ""
        if device:
            self._choose_source()

    def _choose_source(self) -> None:
        nvml = self._nvml  # a module like pynvml; None: import pynvml; False: no NVML
        if nvml is False:
            nvml = self._nvml = None
        elif nvml is None:
            try:
                nvml = importlib.import_module("pynvml")  # optional: nvidia-ml-py
            except ImportError:
                nvml = None
        if nvml is not None:
            try:
                nvml.nvmlInit()
                if self.device.isdigit():
                    self._handle = nvml.nvmlDeviceGetHandleByIndex(int(self.device))
                else:
                    self._handle = nvml.nvmlDeviceGetHandleByUUID(self.device)
                self._nvml = nvml
                self.source = "nvml"
                return
            except Exception as e:  # NVMLError: no driver, no such device
                log.debug("runstream: NVML unavailable for GPU %s: %s", self.device, e)
                self._nvml = None
        if self._smi is None:
            self._smi = shutil.which("nvidia-smi")
        if self._smi:
            self.source = "nvidia-smi"

    def poll(self) -> float | None:
        """A new sample of the GPU's used memory in bytes, or None (none due, none
        finished yet, or no source)."""
        if not self.source:
            return None
        now = self._clock()
        if self._nvml is not None:
            if now < self._next_s:
                return None
            self._next_s = now + self._interval_s
            try:
                return float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            except Exception as e:
                log.debug("runstream: NVML memory read failed: %s", e)
                return None
        return self._poll_smi(now)

    def _poll_smi(self, now: float) -> float | None:
        proc = self._proc
        if proc is None:
            if now >= self._next_s:
                self._next_s = now + self._interval_s
                self._start_smi(now)
            return None
        if proc.poll() is None:
            if now > self._proc_deadline_s:  # hung (a wedged driver): give up on it
                self.close()
            return None
        self._proc = None
        if proc.stdout is None:  # never: stdout is a pipe
            return None
        with proc.stdout as out:
            text = out.read()  # a line, far below a pipe's buffer: it never blocked
        return parse_memory_used(text) if proc.returncode == 0 else None

    def _start_smi(self, now: float) -> None:
        try:
            self._proc = subprocess.Popen(
                [self._smi or "nvidia-smi", f"--id={self.device}", "--query-gpu=memory.used",
                 "--format=csv,noheader,nounits"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                text=True,
            )
            self._proc_deadline_s = now + _NVIDIA_SMI_TIMEOUT_S
        except OSError as e:
            log.debug("runstream: nvidia-smi failed: %s", e)
            self.source = ""

    def close(self) -> None:
        """Kill a running nvidia-smi and close its pipe. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def parse_memory_used(out: str) -> float | None:
    """nvidia-smi's ``memory.used`` (MiB, first line) in bytes; None if unreadable
    ("[N/A]"). Pure."""
    for line in out.splitlines():
        try:
            return float(line.strip()) * 1024 * 1024
        except ValueError:
            return None
    return None


def _torch_allocated() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        cuda = torch.cuda
        if not cuda.is_initialized():  # memory_allocated() would initialise CUDA
            return None
        return float(cuda.memory_allocated())
    except Exception:  # telemetry must never break a training step
        return None


class StepTimer:
    """Times training steps on one rank and logs them with ``run.log`` at the step.

    ``start_step(step)`` ... ``end_step()`` (or ``with timer.step(step):``) logs, at ``step``:

    * ``telemetry/step_time_s``: seconds from start to end;
    * ``telemetry/data_wait_s``: seconds from the previous step's end to this start (the
      time spent fetching the batch), from the second step on;
    * ``telemetry/device_memory_bytes`` (and ``telemetry/torch_allocated_bytes``) when a
      sample is due (``memory_interval_s``) and available; ``device_memory=False`` turns
      them off.

    ``step`` is the training step the loop logs its own metrics at (``run.log``'s automatic
    step continues from the timer's, as from any explicit step). A ``start_step`` while a
    step is open ends that step first; ``end_step`` without an open step does nothing; a
    ``with`` block that raises logs nothing for its step.
    Call ``reset()`` after a pause (evaluation, checkpointing) so the next step's data
    wait does not include it. ``clock`` (seconds, monotonic) is for tests.

    Cost: two clock reads and one ``run.log`` per step, no I/O and no thread (see the
    module docstring for how device memory is read). Not thread-safe: one timer per
    training loop.
    """

    def __init__(self, run: _Logs, *, device_memory: bool = True,
                 memory_interval_s: float = DEFAULT_MEMORY_INTERVAL_S,
                 clock: Callable[[], float] = time.perf_counter,
                 environ: Mapping[str, str] | None = None,
                 memory: DeviceMemory | None = None) -> None:
        self._run = run
        self._clock = clock
        self._step = 0
        self._start: float | None = None
        self._last_end: float | None = None
        self._memory = memory
        self._torch = device_memory
        self._interval_s = memory_interval_s
        self._torch_next = clock()
        if device_memory and memory is None:
            env = os.environ if environ is None else environ
            local_rank = getattr(run, "local_rank", None)
            if not isinstance(local_rank, int):
                try:
                    local_rank = int(env.get("LOCAL_RANK", "0"))
                except ValueError:
                    local_rank = 0
            self._memory = DeviceMemory(device_of(local_rank, env),
                                        interval_s=memory_interval_s)
        self._memory_source = self._memory.source if self._memory is not None else ""

    def start_step(self, step: int) -> None:
        """Start timing ``step`` (ends an open step first)."""
        now = self._clock()
        if self._start is not None:
            self._end(self._start, now)
        self._step = step
        self._start = now

    def end_step(self) -> None:
        """End the open step and log its telemetry at its step; nothing if none is open.
        Raises what ``run.log`` raises (InvalidArgumentError for a bad step)."""
        start = self._start
        if start is not None:
            self._end(start, self._clock())

    def _end(self, start: float, now: float) -> None:
        metrics = {TELEMETRY_STEP_TIME: now - start}
        if self._last_end is not None:
            metrics[TELEMETRY_DATA_WAIT] = start - self._last_end
        self._start = None
        self._last_end = now
        if self._memory_source and self._memory is not None:
            used = self._memory.poll()
            if used is not None:
                metrics[TELEMETRY_DEVICE_MEMORY] = used
        if self._torch and now >= self._torch_next:
            self._torch_next = now + self._interval_s
            allocated = _torch_allocated()
            if allocated is not None:
                metrics[TORCH_ALLOCATED] = allocated
        self._run.log(metrics, self._step)

    def reset(self) -> None:
        """Forget the previous step's end (no data wait for the next step) and drop an
        open step."""
        self._start = None
        self._last_end = None

    def step(self, step: int) -> _Step:
        """``with timer.step(i): ...``: start_step(i) on entry, end_step() on exit."""
        return _Step(self, step)

    def close(self) -> None:
        """Stop a running nvidia-smi sample. Idempotent."""
        if self._memory is not None:
            self._memory.close()


class _Step:
    __slots__ = ("_step", "_timer")

    def __init__(self, timer: StepTimer, step: int) -> None:
        self._timer = timer
        self._step = step

    def __enter__(self) -> StepTimer:
        self._timer.start_step(self._step)
        return self._timer

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._timer.end_step()
        else:
            self._timer._start = None  # a failed step's time means nothing
