"""System metrics (CPU, memory, GPU) sampled on a background thread, logged under
``system/``.

Reads ``/proc`` on Linux (psutil when it is installed, elsewhere) and ``nvidia-smi``
when it is on PATH; whatever is unavailable is simply not reported, never an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

THREAD_NAME = "runstream-producer-system"
_NVIDIA_SMI_TIMEOUT_S = 5.0


def _proc_cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values)
    return total - idle, total


def _proc_memory() -> dict[str, float]:
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                info[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return {}
    used = total - available
    return {"system/memory_used_bytes": float(used),
            "system/memory_percent": 100.0 * used / total}


def _process_rss_bytes() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return None


def gpu_samples(nvidia_smi: str) -> dict[str, float]:
    """Utilisation (%) and memory used (bytes) of each GPU, from nvidia-smi. Blocks for
    one subprocess (at most 5 s); {} when it fails."""
    try:
        done = subprocess.run(
            [nvidia_smi, "--query-gpu=index,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, float] = {}
    if done.returncode != 0:
        return out
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            index, util, used_mib = int(parts[0]), float(parts[1]), float(parts[2])
        except ValueError:
            continue  # "[N/A]" on some boards
        out[f"system/gpu{index}/utilization_percent"] = util
        out[f"system/gpu{index}/memory_used_bytes"] = used_mib * 1024 * 1024
    return out


class SystemSampler:
    """Calls ``log(metrics, step)`` every ``interval_s`` seconds with ``system/*`` metrics
    (step 0, 1, 2, ... per sample) on a daemon thread named ``runstream-producer-system``.

    ``stop()`` is idempotent, thread-safe and blocks at most a few seconds.
    """

    def __init__(self, log_metrics: Callable[[dict[str, float], int], None],
                 interval_s: float) -> None:
        self._log = log_metrics
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._psutil: Any = None
        self._last_cpu: tuple[int, int] | None = None
        self._nvidia_smi = shutil.which("nvidia-smi")
        self._step = 0

    def start(self) -> None:
        try:
            import psutil  # optional

            self._psutil = psutil
            psutil.cpu_percent(None)  # primes the delta
        except ImportError:
            self._last_cpu = _proc_cpu_times()
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def sample(self) -> dict[str, float]:
        """One sample of every metric available here. Blocks for nvidia-smi, if any."""
        metrics: dict[str, float] = {}
        if self._psutil is not None:
            ps = self._psutil
            metrics["system/cpu_percent"] = float(ps.cpu_percent(None))
            vm = ps.virtual_memory()
            metrics["system/memory_used_bytes"] = float(vm.total - vm.available)
            metrics["system/memory_percent"] = float(vm.percent)
            metrics["system/process_rss_bytes"] = float(ps.Process().memory_info().rss)
        else:
            now = _proc_cpu_times()
            if now is not None and self._last_cpu is not None and now[1] > self._last_cpu[1]:
                busy = now[0] - self._last_cpu[0]
                metrics["system/cpu_percent"] = 100.0 * busy / (now[1] - self._last_cpu[1])
            self._last_cpu = now
            metrics.update(_proc_memory())
            rss = _process_rss_bytes()
            if rss is not None:
                metrics["system/process_rss_bytes"] = rss
        if self._nvidia_smi is not None:
            metrics.update(gpu_samples(self._nvidia_smi))
        return metrics

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                metrics = self.sample()
                if metrics:
                    self._log(metrics, self._step)
                    self._step += 1
            except Exception:  # a sampling failure must not end sampling
                log.exception("runstream: sampling system metrics failed")
