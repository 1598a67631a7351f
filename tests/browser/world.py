"""What the browser tests' serve holds (written by tests/browser/data_job.py): the
constants the tests check against, and :class:`World`, the session's serve and run ids."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from tests.helpers import REPO, free_port, local_store_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}

SWEEP = "sweep"  # several runs with params lr and batch_size
OTHER = "other"  # a second experiment
DIST = "dist"    # the 4-rank job, the long series, the artifact run, the live run
LRS = (0.01, 0.03, 0.1, 0.3)
BATCH_SIZES = (32, 64, 128, 256)
SWEEP_STEPS = 50
WORLD_SIZE = 4
SLOW_RANK = 2
RANK_STEPS = 60
DIVERGE_STEP = 20
LONG_POINTS = 200_000
ARTIFACT_BYTES = bytes(range(256)) * 400  # 100 KiB, not text
# The serve requires a token (RUNSTREAM_TOKEN): the login test enters it in the login box;
# every other test's context logs in through POST /api/login before its first page.
TOKEN = "browser-" + uuid.uuid4().hex


@dataclass
class World:
    """The serve the tests share and what was written into it."""

    env: dict[str, str]
    url: str  # the web UI's base, "http://127.0.0.1:PORT"
    client: Client
    sweep: list[dict[str, Any]]  # {"run_id", "experiment", "lr", "batch_size", "name"}
    other: list[dict[str, Any]]
    dist_run: str
    long_run: str
    artifact_run: str
    artifact_sha256: str
    live_run: str
    live_stop: Path
    live_proc: subprocess.Popen[bytes]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def job(env: dict[str, str], mode: str, spec: dict[str, Any],
        extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.browser.data_job", mode,
                             json.dumps(spec)], env={**env, **(extra_env or {})}, cwd=REPO)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def ingested(client: Client, run_id: str, world_size: int = 1) -> bool:
    """Every rank FINISHED and every point it logged stored."""
    try:
        run = client.get_run(run_id)
    except NotFoundError:
        return False
    return len(run.ranks) == world_size and all(
        r.status == "FINISHED" and r.producers_finished >= 1
        and r.points_stored == r.points_logged for r in run.ranks)


def start_world(root: Path, **extra: str) -> tuple[dict[str, str], str]:
    env = local_store_env(root, RUNSTREAM_UI_ADDR=f"127.0.0.1:{free_port()}",
                          RUNSTREAM_SYSTEM_METRICS_S="0", RUNSTREAM_TOKEN=TOKEN, **extra)
    return env, f"http://{env['RUNSTREAM_UI_ADDR']}"


