"""The fault matrix: each fault against the real parts, and where every point went.

Standalone (``make bench`` runs it; ``BENCH=reliability``). Starts a throw-away Apache
Kafka broker with deploy/kafka.sh and, per fault, a real ``runstream serve`` (embedded
ClickHouse in a temporary directory) and real SDK processes. Every trainer logs one
metric ``x`` with value = step at steps 0, 1, 2, ..., so a point is identified by its
step. After the fault the service is asked for the whole history (``metric_history``)
and each row says:

* logged: points ``Run.log`` accepted; refused: calls that raised at the call;
* stored: points in the store; duplicated: stored beyond one per step;
* dropped: points the SDK counted as dropped and reported (``run.delivery()``, its log
  line, the run's record), or that the consumer dead-lettered;
* lost silently: logged - unique stored - dropped. Every row must show 0.

Rows whose unit is not points (params) say so. Faults that need root (a small tmpfs,
PID namespaces) are marked "skipped (needs root)" when not run as root.

Environment: RUNSTREAM_BENCH_FAULT_POINTS (200,000); RUNSTREAM_BENCH_FAULTS=name,name
runs a subset (the names in main()).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = str(REPO / "deploy" / "kafka.sh")
POINTS = int(os.environ.get("RUNSTREAM_BENCH_FAULT_POINTS", "200000"))
RUNSTREAM = str(Path(sys.executable).with_name("runstream"))
IS_ROOT = os.geteuid() == 0

# The trainer: argv[1] is a JSON spec file. Logs `points` values of "x" at steps from
# `first_step`, in chunks, doing what `actions` say between chunks, and prints one JSON
# line with what happened: points logged, calls refused, run.delivery().
TRAINER = textwrap.dedent(r"""
    import json, os, sys, time
    import runstream
    from runstream.proto.errors import InvalidArgumentError

    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    refused = 0
    kwargs = {}
    if spec.get("run_id"):
        kwargs["run_id"] = spec["run_id"]
    run = runstream.init(spec.get("experiment", "faults"), **kwargs)
    print(json.dumps({"run_id": run.id}), flush=True)
    if spec.get("params"):
        run.log_params(spec["params"])
    step = spec.get("first_step", 0)
    chunk = spec.get("chunk", 1000)
    logged = 0
    for i in range(spec["points"] // chunk):
        for _ in range(chunk):
            run.log({"x": float(step)}, step=step)
            step += 1
        logged += chunk
        action = spec.get("actions", {}).get(str(i))
        if action == "flush":
            run.flush(timeout_s=30)
        elif action == "signal":
            print(json.dumps({"at": logged}), flush=True)
            sys.stdin.readline()
        elif action == "free-space":
            os.remove(spec["filler"])
        elif action == "bad-values":
            for bad in ({"x\udcff": 1.0}, {"loss": "nan?"}):
                try:
                    run.log(bad, step=step)
                except InvalidArgumentError:
                    refused += 1
            try:
                run.log({"x": 1.0}, step=2**63)
            except InvalidArgumentError:
                refused += 1
        if spec.get("pace_s"):
            time.sleep(spec["pace_s"])
    delivery = run.delivery() if hasattr(run, "delivery") else None
    if spec.get("exit") == "finish":
        run.finish(timeout_s=spec.get("finish_s", 10.0))
        delivery = run.delivery() if hasattr(run, "delivery") else None
    out = {"logged": logged, "refused": refused}
    if delivery is not None:
        out["delivery"] = {k: v for k, v in vars(delivery).items()} \
            if hasattr(delivery, "__dict__") else str(delivery)
    print(json.dumps(out, default=str), flush=True)
    # exit == "atexit": leave the run to runstream's exit hook
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval_s)


class Broker:
    """deploy/kafka.sh on free ports with a temporary data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {**os.environ, "KAFKA_PORT": str(free_port()),
                    "KAFKA_CONTROLLER_PORT": str(free_port()), "KAFKA_DATA_DIR": str(data_dir)}
        self.pidfile = data_dir / "broker.pid"
        self.start()

    def start(self) -> None:
        out = subprocess.run([KAFKA_SH, "start"], env=self.env, capture_output=True,
                             text=True, timeout=600, check=True)
        self.bootstrap = out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        subprocess.run([KAFKA_SH, "stop"], env=self.env, capture_output=True, timeout=120)

    def signal(self, sig: int) -> None:
        os.kill(int(self.pidfile.read_text().strip()), sig)

    def kill(self) -> None:
        """kill -9, and wait until the process is gone."""
        pid = int(self.pidfile.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the broker to die")

    def topic(self) -> str:
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"faults-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="runstream-bench")
        try:
            admin.create_topics([NewTopic(name, 4, 1), NewTopic(name + ".dlq", 1, 1)])
        finally:
            admin.close()
        return name


@dataclass
class Setup:
    """One fault's world: a home (spool, artifacts), a store, and maybe Kafka."""

    tmp: Path
    kafka: str | None = None
    topic: str | None = None

    @property
    def spool(self) -> Path:
        return self.tmp / "home" / "spool"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env.update({"RUNSTREAM_HOME": str(self.tmp / "home"),
                    "RUNSTREAM_SPOOL_DIR": str(self.spool),
                    "RUNSTREAM_SYSTEM_METRICS_S": "0"})
        if self.kafka:
            env.update({"RUNSTREAM_KAFKA": self.kafka, "RUNSTREAM_TOPIC": self.topic or ""})
        return env


class Serve:
    """A real ``runstream serve`` on an embedded store; stop() with SIGTERM."""

    def __init__(self, setup: Setup, store: Path | None = None,
                 wrap: list[str] | None = None) -> None:
        self.setup = setup
        self.store = store or setup.tmp / "store"
        self.addr = f"127.0.0.1:{free_port()}"
        cmd = [RUNSTREAM, "serve", "--clickhouse", f"chdb://{self.store}",
               "--addr", self.addr, "--spool-dir", str(setup.spool), "--no-ui"]
        self.log = open(setup.tmp / f"serve-{uuid.uuid4().hex[:6]}.log", "w")
        self.proc = subprocess.Popen([*(wrap or []), *cmd], env=setup.env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        from runstream.query.client import Client

        self.client = Client(self.addr)
        wait_for(lambda: self.proc.poll() is not None or self.healthy(), 120,
                 "serve to answer")
        if self.proc.poll() is not None:
            raise RuntimeError(f"serve exited with {self.proc.returncode}")

    def healthy(self) -> bool:
        try:
            return self.proc.poll() is None and self.client.healthy()
        except Exception:  # not listening yet, or gone
            return False

    def history(self, run_id: str) -> list[int]:
        from runstream.proto.errors import NotFoundError

        try:
            return list(self.client.metric_history(run_id, "x").steps)
        except NotFoundError:
            return []

    def settle(self, run_id: str, expect: int, timeout_s: float = 120) -> list[int]:
        """The run's stored steps once `expect` unique steps are in, or once nothing has
        changed for 15 s (then what is there)."""
        deadline = time.monotonic() + timeout_s
        last, changed = -1, time.monotonic()
        while True:
            steps = self.history(run_id)
            if len(set(steps)) >= expect:
                return steps
            if len(steps) != last:
                last, changed = len(steps), time.monotonic()
            if time.monotonic() - changed > 15 or time.monotonic() > deadline:
                return steps
            time.sleep(0.5)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Trainer:
    """The TRAINER script in its own process."""

    def __init__(self, setup: Setup, spec: dict[str, Any], wrap: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        spec_file = setup.tmp / f"spec-{uuid.uuid4().hex[:6]}.json"
        spec_file.write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-c", TRAINER, str(spec_file)],
            env={**setup.env(), **(env or {})}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.run_id = self.read()["run_id"]

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"trainer exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def resume(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out = self.read()
        self.proc.wait(120)
        return out


@dataclass
class Row:
    fault: str
    logged: int | str = "-"
    refused: int | str = "-"
    stored: int | str = "-"
    duplicated: int | str = "-"
    dropped: int | str = "-"
    lost: int | str = "-"
    note: str = ""


def dropped_of(result: dict[str, Any]) -> int:
    delivery = result.get("delivery") or {}
    return int(delivery.get("points_dropped", 0)) if isinstance(delivery, dict) else 0


def points_row(fault: str, result: dict[str, Any], steps: list[int], note: str = "",
               dead_lettered: int = 0) -> Row:
    logged = int(result["logged"])
    unique = len(set(steps))
    dropped = dropped_of(result) + dead_lettered
    return Row(fault, logged, result.get("refused", 0), len(steps), len(steps) - unique,
               dropped, logged - unique - dropped, note)


@contextlib.contextmanager
def world(base: Path, broker: Broker | None) -> Iterator[Setup]:
    tmp = Path(tempfile.mkdtemp(dir=base))
    setup = Setup(tmp)
    if broker is not None:
        setup.kafka, setup.topic = broker.bootstrap, broker.topic()
    try:
        yield setup
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the faults ---------------------------------------------------------------------


def broker_stops_at_exit(base: Path, broker: Broker, exit_how: str) -> Row:
    """The broker stops answering (SIGSTOP) while a trainer logs at full speed; the
    trainer exits within seconds (explicit finish, or the exit hook); the broker comes
    back; serve ingests Kafka and the spool."""
    with world(base, broker) as setup:
        serve = Serve(setup)
        half = POINTS // 2 // 1000
        trainer = Trainer(setup, {"points": POINTS, "actions": {str(half): "signal"},
                                  "exit": exit_how})
        trainer.read()  # half way
        broker.signal(signal.SIGSTOP)
        try:
            trainer.resume()
            result = trainer.result()
        finally:
            broker.signal(signal.SIGCONT)
        steps = serve.settle(trainer.run_id, POINTS)
        serve.stop()
    how = "finish()" if exit_how == "finish" else "exit hook"
    return points_row(f"broker stops answering, trainer exits ({how})", result, steps)


def disk_full(base: Path) -> Row:
    """The spool's disk fills (a 4 MiB tmpfs), then space returns; no Kafka."""
    if not IS_ROOT:
        return Row("spool disk full, then space returns", note="skipped (needs root)")
    with world(base, None) as setup:
        setup.spool.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(setup.spool)],
                       check=True)
        try:
            filler = setup.spool / "filler"
            with open(filler, "wb") as fh:  # leave ~256 KiB
                fh.write(b"\0" * (4 * 1024 * 1024 - 256 * 1024))
            actions = {str(i): "flush" for i in range(POINTS // 1000)}
            actions[str(POINTS // 2000)] = "free-space"
            trainer = Trainer(setup, {"points": POINTS, "actions": actions,
                                      "filler": str(filler), "exit": "finish"})
            result = trainer.result()
            serve = Serve(setup)
            steps = serve.settle(trainer.run_id, POINTS - dropped_of(result))
            status = serve.client.get_run(trainer.run_id).info.status
            serve.stop()
        finally:
            subprocess.run(["umount", "-l", str(setup.spool)], check=False)
    return points_row("spool disk full, then space returns", result, steps,
                      note=f"run {status}")


def bad_values(base: Path, broker: Broker) -> Row:
    """Values the encoder cannot carry: refused at the call; every good point stored."""
    with world(base, broker) as setup:
        serve = Serve(setup)
        trainer = Trainer(setup, {"points": 20_000, "actions": {"5": "bad-values"},
                                  "exit": "finish"})
        result = trainer.result()
        steps = serve.settle(trainer.run_id, 20_000)
        serve.stop()
    return points_row("un-encodable key, step ≥ 2^63, str value", result, steps)


def params_row(base: Path, broker: Broker, fault: str, params: dict[str, str]) -> Row:
    """One log_params call of many or big values: every param stored, points still go
    straight to Kafka."""
    with world(base, broker) as setup:
        serve = Serve(setup)
        trainer = Trainer(setup, {"points": 10_000, "params": params, "exit": "finish"})
        trainer.result()
        steps = serve.settle(trainer.run_id, 10_000)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: len(serve.client.get_run(trainer.run_id).params) >= len(params),
                     60, "params", 1.0)
        stored = len(serve.client.get_run(trainer.run_id).params)
        spooled = len(list(setup.spool.glob("*.spool")))
        serve.stop()
    return Row(f"{fault} (params)", len(params), 0, stored, 0, 0, len(params) - stored,
               f"{len(set(steps)):,} points stored; {spooled} spool files")


def odd_spool_entries(base: Path) -> Row:
    """A directory, a dangling symlink, a symlink to a file and a FIFO named *.spool."""
    with world(base, None) as setup:
        trainer = Trainer(setup, {"points": 20_000, "actions": {"9": "flush"},
                                  "exit": "finish"})
        result = trainer.result()
        spool = setup.spool
        (spool / "a-dir.spool").mkdir()
        (spool / "dangling.spool").symlink_to(spool / "nowhere")
        secret = setup.tmp / "secret.txt"
        secret.write_text("not a spool file")
        (spool / "link.spool").symlink_to(secret)
        os.mkfifo(spool / "fifo.spool")
        serve = Serve(setup)
        steps = serve.settle(trainer.run_id, 20_000)
        alive = serve.healthy()
        serve.stop()
    return points_row("dir, FIFO, symlinks named *.spool", result, steps,
                      note="serve healthy" if alive else "serve NOT healthy")


def corrupt_mid_file(base: Path) -> Row:
    """A few bytes flipped inside a frame in the middle of a spool file of several events
    (one event per 1,000-point chunk); the points of that frame are counted from the
    original bytes, before the damage."""
    from runstream.proto import codec, spool

    with world(base, None) as setup:
        trainer = Trainer(setup, {"points": 20_000, "exit": "finish", "pace_s": 0.16})
        result = trainer.result()
        files = [(list(spool.scan(p.read_bytes())), p) for p in setup.spool.glob("*.spool")]
        frames, target = max(files, key=lambda fp: len(fp[0]))
        if len(frames) < 3:
            return Row("corrupt bytes mid spool file", note="ERROR: no file of 3 frames")
        frame = frames[len(frames) // 2]
        assert isinstance(frame, spool.Frame)
        damaged = len(codec.decode(frame.payload, codec.CONTENT_TYPES[frame.encoding])
                      .metrics.steps)
        data = bytearray(target.read_bytes())
        middle = frame.offset + 9 + len(frame.payload) // 2  # inside the payload
        data[middle:middle + 4] = bytes(b ^ 0xFF for b in data[middle:middle + 4])
        target.write_bytes(bytes(data))
        serve = Serve(setup)
        steps = serve.settle(trainer.run_id, 20_000 - damaged)
        serve.stop()
        letters = [json.loads(line) for path in (setup.spool / "dead").glob("*.jsonl")
                   for line in path.read_text().splitlines()]
    exact = len(letters) == 1 and len(letters[0]["payload_b64"]) == \
        len(base64.b64encode(bytes(9 + len(frame.payload))))
    row = points_row("corrupt bytes mid spool file", result, steps,
                     dead_lettered=damaged if exact else 0)
    row.note = (f"frame {len(frames) // 2 + 1} of {len(frames)} damaged; "
                f"{len(letters)} dead letter{'' if exact else ' (NOT just that frame)'}")
    return row


def serve_pid1_restart(base: Path) -> Row:
    """`serve` as PID 1 of its namespace (a container), SIGKILLed mid-ingest, restarted as
    PID 1 again: its own claims must be recovered."""
    if not IS_ROOT:
        return Row("serve as PID 1 killed, restarted as PID 1", note="skipped (needs root)")
    wrap = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    with world(base, None) as setup:
        actions = {str(i): "flush" for i in range(POINTS // 1000)}
        trainer = Trainer(setup, {"points": POINTS, "actions": actions, "exit": "finish"})
        result = trainer.result()
        serve = Serve(setup, wrap=wrap)
        wait_for(lambda: serve.history(trainer.run_id), 60, "ingest under way", 0.05)
        serve.stop(signal.SIGKILL)
        serve = Serve(setup, wrap=wrap)
        steps = serve.settle(trainer.run_id, POINTS)
        serve.stop()
    return points_row("serve as PID 1 killed, restarted as PID 1", result, steps)


def writer_in_other_pid_namespace(base: Path) -> Row:
    """A trainer in another PID namespace keeps a spool file open for minutes while a
    host serve recovers orphans: the live file is not taken."""
    if not IS_ROOT:
        return Row("trainer in another PID namespace", note="skipped (needs root)")
    with world(base, None) as setup:
        serve = Serve(setup)
        trainer = Trainer(setup, {"points": 9_000, "actions": {"4": "signal"},
                                  "exit": "finish"},
                          wrap=["unshare", "--pid", "--fork", "--mount-proc"])
        trainer.read()
        time.sleep(3)  # the host serve looks at the spool meanwhile
        trainer.resume()
        result = trainer.result()
        steps = serve.settle(trainer.run_id, 9_000)
        serve.stop()
    return points_row("trainer in another PID namespace", result, steps)


def store_removed(base: Path, broker: Broker) -> Row:
    """The embedded store's directory is deleted under a running serve; serve must stop
    committing offsets; a serve restarted on a new store ingests everything from Kafka."""
    with world(base, broker) as setup:
        serve = Serve(setup)
        trainer = Trainer(setup, {"points": POINTS, "actions": {"20": "signal"},
                                  "exit": "finish", "pace_s": 0.002})
        trainer.read()
        wait_for(lambda: serve.history(trainer.run_id), 60, "ingest under way", 0.05)
        shutil.rmtree(serve.store)
        trainer.resume()
        result = trainer.result()
        time.sleep(3)
        healthy = serve.healthy()
        serve.stop()
        serve = Serve(setup, store=setup.tmp / "store2")
        steps = serve.settle(trainer.run_id, POINTS)
        serve.stop()
    return points_row("store directory removed under serve", result, steps,
                      note=f"health while gone: {'SERVING' if healthy else 'NOT_SERVING'}")


def log_while_unreachable(base: Path) -> Row:
    """Kafka configured but nothing listens: the slowest log() call over 20 s."""
    script = textwrap.dedent("""
        import time, runstream
        run = runstream.init("faults")
        worst, t_end, step = 0.0, time.monotonic() + 20, 0
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            run.log({"x": float(step)}, step=step)
            worst = max(worst, time.perf_counter() - t0)
            step += 1
        print(step, worst, flush=True)
        run.finish()
    """)
    with world(base, None) as setup:
        setup.kafka, setup.topic = f"127.0.0.1:{free_port()}", "faults"
        out = subprocess.run([sys.executable, "-c", script], env=setup.env(),
                             capture_output=True, text=True, timeout=120, check=True)
        logged, worst = out.stdout.split()
        spooled = sum(p.stat().st_size for p in setup.spool.glob("*.spool"))
    return Row("log() while Kafka is unreachable (20 s)", int(logged), 0, "-", "-", "-",
               "-", f"slowest log() {float(worst) * 1e3:.1f} ms; {spooled >> 20} MiB spooled")


def broker_hard_restart(base: Path, broker: Broker) -> Row:
    """kill -9 of the broker while a trainer logs; restart; seconds until ingestion
    resumes (a new point is stored)."""
    with world(base, broker) as setup:
        serve = Serve(setup)
        trainer = Trainer(setup, {"points": 60_000, "actions": {"10": "signal"},
                                  "exit": "finish", "pace_s": 0.01})
        trainer.read()
        wait_for(lambda: serve.history(trainer.run_id), 60, "ingest under way", 0.05)
        broker.kill()
        time.sleep(2)
        broker.start()
        back = time.monotonic()
        before = len(serve.history(trainer.run_id))
        trainer.resume()
        wait_for(lambda: len(serve.history(trainer.run_id)) > before, 180,
                 "ingestion to resume", 0.2)
        resumed = time.monotonic() - back
        result = trainer.result()
        steps = serve.settle(trainer.run_id, 60_000)
        serve.stop()
    return points_row("broker kill -9 and restart", result, steps,
                      note=f"ingestion resumed {resumed:.1f} s after the broker was back")


def print_table(rows: list[Row]) -> None:
    headers = ("fault", "logged", "refused", "stored", "duplicated", "dropped+reported",
               "lost silently", "note")
    cells = [[r.fault, *(f"{v:,}" if isinstance(v, int) else v
                         for v in (r.logged, r.refused, r.stored, r.duplicated, r.dropped,
                                   r.lost)), r.note] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *cells, strict=True)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="rs-faults-"))
    broker = Broker(base / "kafka")
    rows: list[Row] = []
    faults: list[tuple[str, Callable[[], Row]]] = [
        ("exit-finish", lambda: broker_stops_at_exit(base, broker, "finish")),
        ("exit-hook", lambda: broker_stops_at_exit(base, broker, "atexit")),
        ("disk-full", lambda: disk_full(base)),
        ("bad-values", lambda: bad_values(base, broker)),
        ("big-params", lambda: params_row(base, broker, "one log_params of 3,000 x 6,000 chars",
                                          {f"p{i}": "v" * 6000 for i in range(3000)})),
        ("many-params", lambda: params_row(base, broker, "one log_params of 100,001 params",
                                           {f"p{i}": str(i) for i in range(100_001)})),
        ("odd-entries", lambda: odd_spool_entries(base)),
        ("corrupt", lambda: corrupt_mid_file(base)),
        ("pid1", lambda: serve_pid1_restart(base)),
        ("pidns", lambda: writer_in_other_pid_namespace(base)),
        ("store-removed", lambda: store_removed(base, broker)),
        ("unreachable", lambda: log_while_unreachable(base)),
        ("broker-restart", lambda: broker_hard_restart(base, broker)),
    ]
    only = set(os.environ.get("RUNSTREAM_BENCH_FAULTS", "").split(",")) - {""}
    try:
        for name, fault in faults:
            if only and name not in only:
                continue
            print(f"fault: {name} ...", file=sys.stderr, flush=True)
            try:
                rows.append(fault())
            except Exception as e:  # one broken fault must not hide the others
                rows.append(Row(name, note=f"ERROR: {type(e).__name__}: {e}"[:200]))
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"\nFault matrix ({POINTS:,} points per long-running trainer); "
          "lost silently must be 0 on every row\n")
    print_table(rows)
    return 1 if any((isinstance(r.lost, int) and r.lost) or r.note.startswith("ERROR")
                    for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
