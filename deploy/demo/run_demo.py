"""`make demo`: the main job on the embedded default, start to finish in a few minutes.

1. starts `runstream serve` (embedded ClickHouse engine + gRPC query service + ingestion
   from the local spool; no Kafka, no server to install),
2. runs two 4-rank training jobs (torchrun-style environments) with different learning
   rates, each rank logging params, per-step metrics and, on rank 0, the model artifact,
3. waits until the service has ingested every point, prints the runs' summaries and a
   few points of their metric histories through the gRPC client,
4. stops the service, leaving the data in place, and says how to keep it running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from runstream.cli.metrics import cmd_history
from runstream.cli.ranks import cmd_ranks
from runstream.cli.runs import cmd_compare, cmd_runs, cmd_show
from runstream.proto import config as names
from runstream.proto.errors import RunstreamError
from runstream.query.client import Client

HERE = Path(__file__).resolve().parent
WORLD_SIZE = 4
STEPS = 300
LEARNING_RATES = (0.5, 0.02)
EXPERIMENT = "digits-demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.25)


def launch_job(lr: float, env: dict[str, str]) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """Start WORLD_SIZE rank processes the way torchrun does; return (run id, processes)."""
    job_id = f"digits-lr{lr}-{uuid.uuid4().hex[:8]}"
    procs = []
    for rank in range(WORLD_SIZE):
        rank_env = {
            **env,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD_SIZE),
            "LOCAL_WORLD_SIZE": str(WORLD_SIZE),
            "TORCHELASTIC_RUN_ID": job_id,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "train_digits.py"), "--lr", str(lr),
             "--steps", str(STEPS), "--experiment", EXPERIMENT],
            env=rank_env,
        ))
    return job_id, procs


def ingested(client: Client, run_id: str) -> bool:
    """True once every rank's FINISHED and every loss point are queryable."""
    try:
        run = client.get_run(run_id)
    except RunstreamError:
        return False
    ranks = run.ranks
    if len(ranks) != WORLD_SIZE or any(r.status != "FINISHED" for r in ranks):
        return False
    return all(len(client.metric_history(run_id, key).steps) == WORLD_SIZE * STEPS
               for key in ("train/loss", "telemetry/step_time_s"))


def main() -> int:
    env = {k: v for k, v in os.environ.items() if k != names.KAFKA}  # embedded default
    addr = f"127.0.0.1:{free_port()}"
    env[names.QUERY_ADDR] = addr
    home = names.home(env)
    print(f"demo: data under {home} (set {names.HOME} to use another place)", flush=True)
    # The demo's own serve stops at the end: no web UI on it (its port may be taken).
    serve = subprocess.Popen([sys.executable, "-m", "runstream.cli.main", "serve", "--no-ui"],
                             env=env)
    try:
        with Client(addr) as client:
            wait_until(lambda: serve.poll() is not None or client.healthy(), 120,
                       "the query service")
            if serve.poll() is not None:
                print("demo: `runstream serve` exited early", file=sys.stderr)
                return 1
            started = time.monotonic()
            jobs = [launch_job(lr, env) for lr in LEARNING_RATES]
            for job_id, procs in jobs:
                codes = [p.wait() for p in procs]
                if any(codes):
                    print(f"demo: job {job_id} failed: exit codes {codes}", file=sys.stderr)
                    return 1
            print(f"demo: {len(jobs)} jobs x {WORLD_SIZE} ranks trained in "
                  f"{time.monotonic() - started:.1f}s", flush=True)
            for job_id, _ in jobs:
                wait_until(lambda j=job_id: ingested(client, j), 120, f"run {job_id} ingested")
            print("\n== runs of experiment", EXPERIMENT, "(through gRPC) ==")
            cmd_runs(client, EXPERIMENT, 10, False)
            first = jobs[0][0]
            print(f"\n== runstream show {first} ==")
            cmd_show(client, first, False)
            print(f"\n== runstream history {first} val/acc --ranks 0 (first points) ==")
            cmd_history(client, first, "val/acc", [0], 8, False)
            print(f"\n== runstream ranks {first} ==")
            cmd_ranks(client, first, False)
            run_ids = [job_id for job_id, _ in jobs]
            print(f"\n== runstream compare {' '.join(run_ids)} ==")
            cmd_compare(client, run_ids, ["val/acc", "val/loss"], False, False)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
    print(
        "\ndemo: done; the service is stopped and the data stays in place.\n"
        "Keep the service running with:\n"
        "    .venv/bin/runstream serve\n"
        "and, from another terminal, query it:\n"
        "    .venv/bin/runstream runs\n"
        f"    .venv/bin/runstream show {jobs[0][0]}\n"
        f"    .venv/bin/runstream history {jobs[0][0]} val/acc --ranks 0\n"
        f"    .venv/bin/runstream ranks {jobs[0][0]}\n"
        f"    .venv/bin/runstream compare {jobs[0][0]} {jobs[1][0]}"
    )
    ui_addr = env.get("RUNSTREAM_UI_ADDR", "127.0.0.1:8080")
    print(
        f"\nWeb UI: run `RUNSTREAM_HOME={home} .venv/bin/runstream serve` and open\n"
        f"    http://{ui_addr}/#/runs?experiment={EXPERIMENT}\n"
        f"    http://{ui_addr}/#/run/{jobs[0][0]}/distributed  (the ranks of one job)\n"
        f"    http://{ui_addr}/#/compare?run={jobs[0][0]}&run={jobs[1][0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
