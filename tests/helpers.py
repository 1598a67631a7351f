"""Small test utilities: poll with a deadline instead of sleeping for a result, free ports
and topics, events sent to and read back from the real parts, and what a consumer
RowBatch holds. Kafka is imported only by the helpers that talk to it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runstream.proto import codec, spool
from runstream.proto.v1 import events_pb2 as pb

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def wait_for(
    fetch: Callable[[], T],
    done: Callable[[T], bool] = bool,
    timeout_s: float = 60.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Call `fetch` until `done(result)` holds; return that result or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T = fetch()
    while not done(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)
        last = fetch()
    return last


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_store_env(root: Path, **extra: str) -> dict[str, str]:
    """os.environ without any RUNSTREAM_* variable, pointing everything at a store of its
    own under ``root`` (home, chdb, spool, artifacts) and a free query address: what a
    `runstream serve` and the SDK processes feeding it share. ``extra``: more variables
    (RUNSTREAM_SYSTEM_METRICS_S="0", a token, ...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({
        "RUNSTREAM_HOME": str(root / "home"),
        "RUNSTREAM_CLICKHOUSE": f"chdb://{root / 'chdb'}",
        "RUNSTREAM_SPOOL_DIR": str(root / "spool"),
        "RUNSTREAM_ARTIFACTS": str(root / "artifacts"),
        "RUNSTREAM_QUERY_ADDR": f"127.0.0.1:{free_port()}",
        # The web UI on a port of its own (its default, 8080, is one port for everyone).
        "RUNSTREAM_UI_ADDR": "127.0.0.1:0",
        **extra,
    })
    return env


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A ``runstream serve`` with ``env`` (see local_store_env), yielded once its query
    service answers the health check (the import of chdb and the table creation take
    seconds on a loaded machine: a query sent before that is refused); stopped with SIGTERM
    afterwards, and it must exit 0. ``log``: where its output goes (else the test's)."""
    from runstream.query.client import Client

    out = log.open("ab") if log is not None else None
    serve = subprocess.Popen([sys.executable, "-m", "runstream.cli.main", "serve"], env=env,
                             stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        with Client(env["RUNSTREAM_QUERY_ADDR"], environ=env, timeout_s=30) as client:

            def healthy() -> bool:
                if serve.poll() is not None:  # no use waiting for a process that is gone
                    raise AssertionError(f"runstream serve exited {serve.returncode} at start")
                return client.healthy()

            wait_for(healthy, timeout_s=120, what="runstream serve")
        yield serve
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
        finally:
            if out is not None:
                out.close()
        assert code == 0, f"runstream serve exited {code}"


def free_port_range(n: int) -> int:
    """The first of ``n`` consecutive TCP ports on 127.0.0.1 that nothing listens on now
    (deploy/kafka.sh gives the nodes of a cluster consecutive ports)."""
    import random

    for _ in range(200):
        first = random.randint(20_000, 60_000 - n)  # below the usual ephemeral range
        socks = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found")


# --- Kafka --------------------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int = 4) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="runstream-tests")
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, events: list[pb.RunEvent], encoding: str) -> None:
    """Send encoded events keyed ``run_id/rank`` as the SDK does, and wait for the acks."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20,
                             max_request_size=32 << 20)
    try:
        for e in events:
            send_raw(producer, topic, codec.encode(e, encoding), codec.CONTENT_TYPES[encoding],
                     f"{e.run_id}/{e.rank}")
        producer.flush()
    finally:
        producer.close()


def send_raw(producer: KafkaProducer, topic: str, value: bytes, content_type: str | None,
             key: str) -> None:
    headers = [] if content_type is None else [(codec.CONTENT_TYPE_HEADER, content_type.encode())]
    producer.send(topic, value=value, key=key.encode(), headers=headers)


def committed(admin: KafkaAdminClient, group: str) -> int:
    """Messages committed by ``group`` over all partitions (0 while its coordinator loads)."""
    from kafka.errors import KafkaError

    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:
        return 0
    return sum(o.offset for o in offsets.values() if o.offset > 0)


def source_state(source: Any) -> str:
    """What a KafkaSource's consumer holds, for the message of a drain that timed out: its
    group state, assignment, and position against the end offset of each partition."""
    consumer = source._consumer
    try:
        state = consumer.group_metadata().state
        assignment = sorted(consumer.assignment())
        ends = consumer.end_offsets(assignment) if assignment else {}
        held = [f"{tp.partition}: {consumer.position(tp)}/{ends.get(tp)}" for tp in assignment]
    except Exception as e:  # a diagnostic: whatever it can say
        return f"the consumer's state could not be read: {e!r}"
    return f"group state {state}; partitions (position/end): {held or 'none assigned'}"


# --- ClickHouse and the consumer's batches --------------------------------------------------


def drop_databases(dsn: str, prefix: str) -> None:
    """Drop every database of the engine at ``dsn`` whose name starts with ``prefix``: each
    table left behind keeps background tasks running in the test process's engine, and by
    the end of a session hundreds of them slowed every later test (400 idle databases took
    about half of one of this machine's two cores; a query test's setup took 9 s, not 0.5 s)."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        made = client.query("SELECT name FROM system.databases WHERE startsWith(name, {p:String})",
                            parameters={"p": prefix}).result_rows
        for (database,) in made:
            client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
    finally:
        client.close()


def count(client: Any, table: str) -> int:
    """Deduplicated rows of ``table``."""
    return int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])


def table_columns(batch: Any, table: Any) -> list[list[Any]]:
    """The rows of ``table`` (a runstream.proto.tables.Table) in a consumer RowBatch, as
    column lists in the table's column order (metric points read out of their Arrow table)."""
    for t, data in batch.nonempty():
        if t is table:
            if isinstance(data, list):
                return [list(c) for c in data]
            return [column.to_pylist() for column in data.columns]
    return [[] for _ in table.columns]


def row_count(batch: Any, table: Any) -> int:
    """Rows of ``table`` in a consumer RowBatch."""
    return len(table_columns(batch, table)[0])


# --- the local spool ------------------------------------------------------------------------


def read_spool(directory: Path) -> list[pb.RunEvent]:
    """Every event in the published spool files of ``directory``, in file order."""
    return [codec.decode(f.payload, codec.CONTENT_TYPES[f.encoding])
            for p in spool.ready_files(directory) for f in spool.read_frames(p)]


def points_of(events: list[pb.RunEvent]) -> list[tuple[str, int, float]]:
    """(key, step, value) of every metric point in ``events``, in order."""
    out = []
    for e in events:
        if e.WhichOneof("body") == "metrics":
            m = e.metrics
            out += [(m.keys[k], s, v) for k, s, v in zip(m.key_index, m.steps, m.values,
                                                           strict=True)]
    return out


def steps_of(events: list[pb.RunEvent], key: str) -> list[int]:
    """The steps of ``key``'s points in ``events``, in order."""
    return [s for e in events if e.HasField("metrics")
            for k, s in zip(e.metrics.key_index, e.metrics.steps, strict=True)
            if e.metrics.keys[k] == key]


# --- a small real disk ----------------------------------------------------------------------


def is_root() -> bool:
    import os

    return os.geteuid() == 0


class Tmpfs:
    """A real tmpfs of ``size`` mounted on ``path`` (needs root), to fill up for disk-full
    tests; :meth:`fill` takes every free byte, :meth:`free` gives them back."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        import subprocess

        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True)
        self.path = path
        self._filler = path / "filler.bin"

    def fill(self) -> None:
        """Write until the disk refuses: ENOSPC for every later write."""
        import errno

        with open(self._filler, "ab", buffering=0) as fh:
            while True:
                try:
                    fh.write(b"\0" * 4096)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
            while True:  # the last few bytes
                try:
                    fh.write(b"\0")
                except OSError:
                    break

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], check=False)
