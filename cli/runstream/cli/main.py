"""The `runstream` command: services (serve, consume, query-server), sync, and read commands.

This is the composition root: the only place that wires producer, consumer and query
together. Imports are lazy so `runstream sync` never loads grpcio or ClickHouse.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstream.proto import config as names
from runstream.proto.errors import RunstreamError

if TYPE_CHECKING:
    from runstream.consumer.config import ConsumerConfig
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


def _flags(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """``{config field: value}`` of the flags (``flag=field``) given on the command line."""
    return {field: getattr(args, flag) for flag, field in fields.items()
            if getattr(args, flag, None) is not None}


def _consumer_config(args: argparse.Namespace) -> ConsumerConfig:
    """The consumer's configuration: its variables, with the command's flags on top."""
    from runstream.consumer.config import ConsumerConfig

    explicit = _flags(args, clickhouse="clickhouse_dsn", database="database", topic="topic",
                      spool_dir="spool_dir")
    if getattr(args, "kafka", None) is not None:
        explicit["kafka_bootstrap"] = tuple(names.parse_bootstrap("--kafka", args.kafka))
    return dataclasses.replace(ConsumerConfig.from_env(), **explicit)


def _query_config(args: argparse.Namespace) -> QueryConfig:
    """The query server's configuration: its variables, with the command's flags on top."""
    from runstream.query.config import QueryConfig

    explicit = _flags(args, addr="addr", clickhouse="clickhouse_dsn", database="database")
    return dataclasses.replace(QueryConfig.from_env(), **explicit)


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
    """Embedded mode: ingestion (spool, and Kafka if configured) + query service, one process."""
    from runstream.consumer.factories import (
        build_kafka_pipeline,
        build_spool_pipeline,
        connect_clickhouse,
    )
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
    print(f"runstream serve: query service on {server.address}, "
          f"ClickHouse {consumer_config.clickhouse_dsn}, ingesting from {sources}", flush=True)
    _report_progress(stop, consumer_config, pipelines, client)
    try:
        while not stop.wait(0.5):
            if not all(t.is_alive() for t in threads):
                log.error("an ingestion thread stopped unexpectedly; shutting down")
                stop.set()
                return 1
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop(grace_s=5.0)
        print("runstream serve: stopped", flush=True)
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
    print(f"runstream query-server: listening on {server.address}", flush=True)
    stop.wait()
    server.stop(grace_s=5.0)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from runstream.config import ProducerConfig
    from runstream.sync import sync

    # What the producer would send to: its variables, with the command's flags on top.
    config = dataclasses.replace(
        ProducerConfig.from_env(), **_flags(args, kafka="kafka", topic="topic",
                                            spool_dir="spool_dir"))
    if not config.kafka:
        raise RunstreamError(f"runstream sync needs Kafka: set {names.KAFKA} or --kafka")

    def progress(done: int, total: int) -> None:
        print(f"\rrunstream sync: {done}/{total} spool files sent", end="", flush=True)

    stats = sync(config.spool_dir, config.kafka, config.topic, progress=progress)
    print(f"\nrunstream sync: {stats}", flush=True)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from runstream.query.client import Client

    return Client(args.addr)  # None: $RUNSTREAM_QUERY_ADDR, or the default


def cmd_runs(args: argparse.Namespace) -> int:
    from runstream.cli.read_commands import cmd_runs as run

    with _client(args) as client:
        return int(run(client, args.experiment, args.limit, args.json,
                       filter_text=args.filter or "", order_by=args.order_by or []))


def cmd_compare(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_compare as run

    keys = args.keys.split(",") if args.keys else []
    with _client(args) as client:
        return int(run(client, args.run_ids, keys, args.all, args.json))


def cmd_reproduce(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_reproduce as run

    with _client(args) as client:
        return int(run(client, args.run_id))


def cmd_experiments(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_experiments as run

    with _client(args) as client:
        return int(run(client, args.json))


def cmd_status(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_status as run

    with _client(args) as client:
        return int(run(client, args.json))


def cmd_follow(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_follow as run

    keys = args.keys.split(",") if args.keys else []
    with _client(args) as client:
        return int(run(client, args.run_id, keys, args.from_step, sys.stdout))


def cmd_plot(args: argparse.Namespace) -> int:
    from runstream.cli.query_commands import cmd_plot as run

    with _client(args) as client:
        return int(run(client, args.run_ids, args.key, args.out, args.max_points))


def cmd_show(args: argparse.Namespace) -> int:
    from runstream.cli.read_commands import cmd_show as run

    with _client(args) as client:
        return int(run(client, args.run_id, args.json))


def cmd_history(args: argparse.Namespace) -> int:
    from runstream.cli.read_commands import cmd_history as run

    ranks = [int(r) for r in args.ranks.split(",")] if args.ranks else None
    with _client(args) as client:
        return int(run(client, args.run_id, args.key, ranks, args.limit, args.json,
                       max_points=args.max_points, aggregate=args.aggregate or ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream",
        description="Experiment tracking for distributed training. Flags override "
        "RUNSTREAM_* environment variables, which override defaults.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def service_flags(p: argparse.ArgumentParser, *, query: bool, ingest: bool) -> None:
        p.add_argument("--clickhouse", help=f"ClickHouse DSN ({names.CLICKHOUSE})")
        p.add_argument("--database", help=f"ClickHouse database ({names.CLICKHOUSE_DATABASE})")
        if query:
            p.add_argument("--addr", help=f"host:port to listen on ({names.QUERY_ADDR})")
        if ingest:
            p.add_argument("--kafka", help=f"Kafka bootstrap servers ({names.KAFKA})")
            p.add_argument("--topic", help=f"Kafka topic ({names.TOPIC})")

    p = sub.add_parser("serve", help="embedded mode: ingest (spool, Kafka if set) + query service")
    service_flags(p, query=True, ingest=True)
    p.add_argument("--spool-dir", type=Path, help=f"spool directory ({names.SPOOL_DIR})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("consume", help="ingest from Kafka into ClickHouse")
    service_flags(p, query=False, ingest=True)
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("query-server", help="serve the gRPC query service")
    service_flags(p, query=True, ingest=False)
    p.set_defaults(func=cmd_query_server)

    p = sub.add_parser("sync", help="send spooled events (offline runs) to Kafka")
    p.add_argument("--kafka", help=f"Kafka bootstrap servers ({names.KAFKA})")
    p.add_argument("--topic", help=f"Kafka topic ({names.TOPIC})")
    p.add_argument("--spool-dir", type=Path, help=f"spool directory ({names.SPOOL_DIR})")
    p.set_defaults(func=cmd_sync)

    def read_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--addr", help=f"query service host:port ({names.QUERY_ADDR})")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--filter", help="MLflow search filter, e.g. \"metrics.acc > 0.9 and "
                   "params.lr = '0.01'\"")
    p.add_argument("--order-by", action="append", help="e.g. 'metrics.acc DESC' (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    read_flags(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="everything recorded for one run")
    p.add_argument("run_id")
    read_flags(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("history", help="a metric's points over steps")
    p.add_argument("run_id")
    p.add_argument("key")
    p.add_argument("--ranks", help="comma-separated ranks (default: all)")
    p.add_argument("--limit", type=int, default=0, help="print at most this many points (0: all)")
    p.add_argument("--max-points", type=int, default=0,
                   help="downsample each series to this many points (LTTB + min/max)")
    p.add_argument("--aggregate", choices=["mean", "min", "max"],
                   help="one series across ranks per step")
    read_flags(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("compare", help="runs side by side, differences first")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--keys", help="comma-separated metric keys (default: all)")
    p.add_argument("--all", action="store_true", help="also show identical fields")
    read_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("reproduce", help="what it takes to reproduce a run")
    p.add_argument("run_id")
    p.add_argument("--addr", help=f"query service host:port ({names.QUERY_ADDR})")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("follow", help="stream a live run's points and status changes")
    p.add_argument("run_id")
    p.add_argument("--keys", help="comma-separated metric keys (default: all)")
    p.add_argument("--from-step", type=int, default=0, help="backfill from this step (-1: none)")
    p.add_argument("--addr", help=f"query service host:port ({names.QUERY_ADDR})")
    p.set_defaults(func=cmd_follow)

    p = sub.add_parser("plot", help="plot a metric of runs to a PNG (needs matplotlib)")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--key", required=True)
    p.add_argument("--out", default="plot.png")
    p.add_argument("--max-points", type=int, default=1000)
    p.add_argument("--addr", help=f"query service host:port ({names.QUERY_ADDR})")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("experiments", help="experiments and their run counts")
    read_flags(p)
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("status", help="ingestion progress of the consumers (last minute)")
    read_flags(p)
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except RunstreamError as e:
        print(f"runstream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
