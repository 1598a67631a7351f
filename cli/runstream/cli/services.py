"""The CLI's service commands: ``serve``, ``consume``, ``query-server``, ``sync``, and
``status`` (what the consumers report of their ingestion).

These are the composition root: the only place that wires producer, consumer and query
together. Each service command reads its component's ``*Config`` from the environment,
applies the command's flags on top (flags win), and runs until SIGTERM/SIGINT. Imports
are lazy, so ``runstream sync`` never loads grpcio or ClickHouse.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runstream.cli.output import format_table, format_time_ms, run_command, to_json
from runstream.proto import config as names
from runstream.proto.errors import RunstreamError

if TYPE_CHECKING:
    from runstream.consumer.config import ConsumerConfig
    from runstream.query.client import Client
    from runstream.query.config import QueryConfig

log = logging.getLogger(__name__)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set `stop`; a second SIGINT exits at once."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("received %s, finishing the batch in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _consumer_config(args: argparse.Namespace) -> ConsumerConfig:
    """The consumer's configuration: its variables, with the command's flags on top."""
    from runstream.consumer.config import ConsumerConfig

    kafka = getattr(args, "kafka", None)
    return names.with_explicit(
        ConsumerConfig.from_env(), clickhouse_dsn=args.clickhouse, database=args.database,
        topic=getattr(args, "topic", None), spool_dir=getattr(args, "spool_dir", None),
        kafka_bootstrap=None if kafka is None else tuple(names.parse_bootstrap("--kafka", kafka)),
    )


def _query_config(args: argparse.Namespace) -> QueryConfig:
    """The query server's configuration: its variables, with the command's flags on top."""
    from runstream.query.config import QueryConfig

    return names.with_explicit(QueryConfig.from_env(), addr=getattr(args, "addr", None),
                               clickhouse_dsn=args.clickhouse, database=args.database,
                               ui_addr=getattr(args, "ui_addr", None),
                               ui=False if getattr(args, "no_ui", False) else None)


def _ui_line(server: Any) -> str:
    """", web UI on http://host:port" for the start line ("" when the UI is off)."""
    return f", web UI on {server.ui_url.rstrip('/')}" if server.ui_url else ""


def _report_progress(stop: threading.Event, config: Any, pipelines: Sequence[Any],
                     client: Any, echo: Callable[[str], None] | None = None
                     ) -> list[threading.Thread]:
    """Start the consumer's monitors: progress rows in ClickHouse plus terminal lines
    (points/s, batch latency, lag per partition; to ``echo``, default stdout) every
    interval, and CRASHED detection. Returns their (daemon) threads; ``stop`` ends them."""
    from runstream.consumer.factories import start_monitors

    def to_stdout(line: str) -> None:
        print(line, flush=True)

    return start_monitors(config, pipelines, stop, client=client, echo=echo or to_stdout)


def cmd_serve(args: argparse.Namespace) -> int:
    """Embedded mode: ingestion (spool, and Kafka if configured) + query service, one process.

    If the embedded store is removed under it, ingestion stops without committing another
    offset, the query service stays up answering NOT_SERVING to health checks and
    UNAVAILABLE (naming the path) to queries, and the process exits 1 at SIGTERM/SIGINT;
    restarted, it reads Kafka again into the new store."""
    from runstream.consumer.factories import (
        build_kafka_pipeline,
        build_spool_pipeline,
        connect_clickhouse,
    )
    from runstream.consumer.sink import StoreLostError
    from runstream.query.server import start_server

    consumer_config = _consumer_config(args)
    query_config = _query_config(args)
    stop = threading.Event()
    _stop_on_signals(stop)
    # One chdb path opens in one process only: ingestion shares this client, and the
    # pipelines create the tables before the query service starts answering.
    client = connect_clickhouse(consumer_config.clickhouse_dsn, consumer_config.database)
    pipelines = [build_spool_pipeline(consumer_config, client=client)]
    if consumer_config.kafka_bootstrap:
        pipelines.append(build_kafka_pipeline(consumer_config, client=client))
    server = start_server(query_config)
    threads = [p.start(stop) for p in pipelines]
    sources = f"spool {consumer_config.spool_dir}"
    if consumer_config.kafka_bootstrap:
        sources += (f" + Kafka {','.join(consumer_config.kafka_bootstrap)}"
                    f" topic {consumer_config.topic}")
    print(f"runstream serve: query service on {server.address}{_ui_line(server)}, "
          f"ClickHouse {consumer_config.clickhouse_dsn}, ingesting from {sources}", flush=True)
    _report_progress(stop, consumer_config, pipelines, client)
    store_lost = False
    try:
        while not stop.wait(0.5):
            ended = [p for p, t in zip(pipelines, threads, strict=True) if not t.is_alive()]
            if ended and all(isinstance(p.error, StoreLostError) for p in ended):
                if not store_lost:
                    store_lost = True
                    log.error("runstream serve: ingestion stopped, the store is gone (%s);"
                              " queries answer UNAVAILABLE until this process is restarted",
                              ended[0].error)
                continue
            if ended:
                log.error("an ingestion thread stopped unexpectedly; shutting down")
                stop.set()
                return 1
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop(grace_s=5.0)
        print("runstream serve: stopped", flush=True)
    # Also when the loss was found only by the last flush, after the stop signal.
    if any(isinstance(p.error, StoreLostError) for p in pipelines):
        # The embedded engine's own teardown at interpreter exit can crash (SIGSEGV) on a
        # store whose files were removed under it; everything is stopped and flushed, so
        # end here with the status that says why.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


def _sum_counters(pipelines: Sequence[Any]) -> tuple[int, int, int]:
    return (
        sum(p.points for p in pipelines),
        sum(p.events for p in pipelines),
        sum(p.dead_lettered for p in pipelines),
    )


def cmd_consume(args: argparse.Namespace) -> int:
    """Kafka -> ClickHouse ingestion (one member of the consumer group), with progress
    lines and CRASHED detection, until SIGTERM/SIGINT."""
    from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse

    config = _consumer_config(args)
    if not config.kafka_bootstrap:
        raise RunstreamError(f"runstream consume needs Kafka: set {names.KAFKA} or --kafka")
    stop = threading.Event()
    _stop_on_signals(stop)
    client = connect_clickhouse(config.clickhouse_dsn, config.database)
    pipeline = build_kafka_pipeline(config, client=client)
    print(f"runstream consume: {','.join(config.kafka_bootstrap)} topic {config.topic} -> "
          f"ClickHouse {config.clickhouse_dsn} database {config.database}", flush=True)
    monitors = _report_progress(stop, config, [pipeline], client)
    started = time.monotonic()
    try:
        pipeline.run(stop)
    finally:
        stop.set()
        for thread in monitors:
            thread.join(timeout=10)
    points, events, dead = _sum_counters([pipeline])
    print(f"runstream consume: stopped after {time.monotonic() - started:,.1f} s: "
          f"{points:,} points, {events:,} events, {dead:,} dead-lettered", flush=True)
    return 0


def cmd_query_server(args: argparse.Namespace) -> int:
    from runstream.query.server import start_server

    config = _query_config(args)
    stop = threading.Event()
    _stop_on_signals(stop)
    server = start_server(config)
    print(f"runstream query-server: listening on {server.address}{_ui_line(server)}",
          flush=True)
    stop.wait()
    server.stop(grace_s=5.0)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from runstream.config import ProducerConfig
    from runstream.sync import sync

    # What the producer would send to: its variables, with the command's flags on top.
    config = names.with_explicit(ProducerConfig.from_env(), kafka=args.kafka, topic=args.topic,
                                 spool_dir=args.spool_dir)
    if not config.kafka:
        raise RunstreamError(f"runstream sync needs Kafka: set {names.KAFKA} or --kafka")

    def progress(done: int, total: int) -> None:
        print(f"\rrunstream sync: {done}/{total} spool files sent", end="", flush=True)

    stats = sync(config.spool_dir, config.kafka, config.topic, progress=progress)
    if stats.files or stats.recovered:
        print(flush=True)  # end the progress line
    line = (f"runstream sync: sent {stats.events:,} event(s), {stats.bytes:,} bytes, "
            f"from {stats.files:,} spool file(s) in {config.spool_dir} to {config.kafka} "
            f"topic {config.topic}")
    if stats.recovered:
        line += f"; {stats.recovered:,} orphaned file(s) recovered first"
    if stats.undecodable:
        line += (f"; {stats.undecodable:,} event(s) did not decode and were sent without "
                 f"a key (the consumer dead-letters them)")
    print(line, flush=True)
    if not stats.kept_aside:
        return 0
    for entry in stats.unsendable:
        print(f"runstream sync: NOT SENT: {entry}", flush=True)
    for entry in stats.corrupt:
        print(f"runstream sync: DAMAGED: {entry}", flush=True)
    print(f"runstream sync: {stats.kept_aside} file(s) kept aside ({stats.refused:,} "
          f"record(s) Kafka refused for good, {stats.damaged_bytes:,} damaged byte(s)); "
          f"their other events were sent. Fix the cause, then rename a file back to "
          f".spool to send it again.", flush=True)
    return 1


def cmd_status(client: Client, as_json: bool, *, err: TextIO | None = None) -> int:
    """Print ingestion progress per consumer partition (last minute)."""

    def body() -> str:
        parts = client.ingest_status()
        if as_json:
            return to_json(parts)
        if not parts:
            return "no consumer reported progress in the last minute"
        return format_table(
            ["CONSUMER", "SOURCE", "TOPIC", "PART", "COMMITTED", "END", "LAG", "POINTS",
             "POINTS/S", "BATCH MS", "AT (UTC)"],
            [(p.consumer_id, p.source, p.topic or "-", p.partition, p.committed_offset,
              p.end_offset, p.lag, p.points_total, f"{p.points_per_s:,.0f}",
              f"{p.batch_latency_ms:.1f}", format_time_ms(p.ts_ms)) for p in parts],
            right=(3, 4, 5, 6, 7, 8, 9),
        )

    return run_command(body, err)
