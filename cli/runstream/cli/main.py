"""The ``runstream`` command: its arguments, and which module runs each subcommand.

Services (``serve``, ``consume``, ``query-server``, ``sync``, ``status``) live in
:mod:`runstream.cli.services`, read commands in :mod:`runstream.cli.runs`,
:mod:`runstream.cli.metrics` and :mod:`runstream.cli.artifacts` (also ``download``), the
commands that change a run after the fact (``tag``, ``note``, ``archive``) in
:mod:`runstream.cli.annotate`. Flags override ``RUNSTREAM_*`` variables, which override
defaults. Importing this module loads neither grpcio nor ClickHouse.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runstream.cli import annotate, artifacts, metrics, ranks, runs, services
from runstream.proto import config as names
from runstream.proto.errors import RunstreamError

#: A read command: (query client, parsed arguments) -> exit status.
ReadCommand = Callable[[Any, argparse.Namespace], int]

#: Exit status when the reader of stdout went away (``runstream runs | head``): 128 +
#: SIGPIPE, what a shell reports for ``cat``, ``grep`` or ``git`` in the same pipe.
EXIT_BROKEN_PIPE = 141

AGGREGATES = ("mean", "min", "max")


def _aggregate(text: str) -> str:
    if text not in AGGREGATES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an aggregate; use mean (average across ranks), min or max")
    return text


def _client(args: argparse.Namespace) -> Any:
    from runstream.query.client import Client

    return Client(args.addr)  # None: $RUNSTREAM_QUERY_ADDR, or the default


def _keys(text: str | None) -> list[str]:
    return text.split(",") if text else []


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
            p.add_argument("--ui-addr", metavar="ADDR",
                           help=f"host:port the web UI listens on ({names.UI_ADDR}, default "
                           f"{names.DEFAULT_UI_ADDR})")
            p.add_argument("--no-ui", action="store_true", help="do not serve the web UI")
        if ingest:
            p.add_argument("--kafka", help=f"Kafka bootstrap servers ({names.KAFKA})")
            p.add_argument("--topic", help=f"Kafka topic ({names.TOPIC})")

    p = sub.add_parser("serve", help="embedded mode: ingest (spool, Kafka if set) + query service")
    service_flags(p, query=True, ingest=True)
    p.add_argument("--spool-dir", type=Path, help=f"spool directory ({names.SPOOL_DIR})")
    p.set_defaults(func=services.cmd_serve)

    p = sub.add_parser("consume", help="ingest from Kafka into ClickHouse")
    service_flags(p, query=False, ingest=True)
    p.set_defaults(func=services.cmd_consume)

    p = sub.add_parser("query-server", help="serve the gRPC query service and the web UI")
    service_flags(p, query=True, ingest=False)
    p.set_defaults(func=services.cmd_query_server)

    p = sub.add_parser("sync", help="send spooled events (offline runs) to Kafka")
    p.add_argument("--kafka", help=f"Kafka bootstrap servers ({names.KAFKA})")
    p.add_argument("--topic", help=f"Kafka topic ({names.TOPIC})")
    p.add_argument("--spool-dir", type=Path, help=f"spool directory ({names.SPOOL_DIR})")
    p.set_defaults(func=services.cmd_sync)

    def read_flags(p: argparse.ArgumentParser,
                   json_help: str = "print JSON instead of text") -> None:
        p.add_argument("--addr", help=f"query service host:port ({names.QUERY_ADDR})")
        p.add_argument("--json", action="store_true", help=json_help)

    p = sub.add_parser("runs", help="list runs, newest first (archived runs hidden)")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--filter", help="MLflow search filter, e.g. \"metrics.acc > 0.9 and "
                   "params.lr = '0.01'\"")
    p.add_argument("--order-by", action="append", help="e.g. 'metrics.acc DESC' (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (50)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--archived", dest="view", action="store_const", const=runs.ARCHIVED_ONLY,
                      help="only archived runs")
    view.add_argument("--all", dest="view", action="store_const", const=runs.ALL,
                      help="archived runs too")
    read_flags(p)
    p.set_defaults(view=runs.ACTIVE_ONLY, read=lambda c, a: runs.cmd_runs(
        c, a.experiment, a.limit, a.json, filter_text=a.filter or "", order_by=a.order_by or [],
        view=a.view))

    p = sub.add_parser("show", help="everything recorded for one run")
    p.add_argument("run_id")
    p.add_argument("--all-attempts", action="store_true",
                   help="list the ranks of every attempt, not only the latest's")
    read_flags(p)
    p.set_defaults(read=lambda c, a: runs.cmd_show(c, a.run_id, a.json,
                                                    all_attempts=a.all_attempts))

    def send_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--addr", help=f"query service host:port, to read the run "
                       f"({names.QUERY_ADDR})")
        p.add_argument("--kafka", help=f"Kafka bootstrap servers ({names.KAFKA}; unset: "
                       "the local spool)")
        p.add_argument("--topic", help=f"Kafka topic ({names.TOPIC})")
        p.add_argument("--spool-dir", type=Path, help=f"spool directory ({names.SPOOL_DIR})")
        p.set_defaults(read=annotate.cmd_annotate)

    p = sub.add_parser("tag", help="set tags on a run (sent through the pipeline)")
    p.add_argument("run_id")
    p.add_argument("tags", nargs="+", metavar="key=value")
    send_flags(p)

    p = sub.add_parser("note", help="keep a note with a run (sent through the pipeline)")
    p.add_argument("run_id")
    p.add_argument("text")
    send_flags(p)

    p = sub.add_parser("archive", help="hide a run from `runs` (--restore: show it again)")
    p.add_argument("run_id")
    p.add_argument("--restore", action="store_true", help="unarchive the run")
    send_flags(p)

    p = sub.add_parser("artifacts", help="a run's artifacts: name, size, sha256, uri")
    p.add_argument("run_id")
    read_flags(p)
    p.set_defaults(read=lambda c, a: artifacts.cmd_artifacts(c, a.run_id, a.json))

    p = sub.add_parser("download", help="copy an artifact out of the store, verified")
    p.add_argument("run_id")
    p.add_argument("name", help="the artifact's name (runstream artifacts RUN lists them)")
    p.add_argument("--out", type=Path, help="file or directory to write (default: the "
                   "artifact's base name here; an existing directory: inside it)")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--sha256", default="", help="the one with this sha256 (prefix), when "
                   "several artifacts have the name")
    p.add_argument("--artifacts", type=Path, help=f"artifact store root ({names.ARTIFACTS})")
    read_flags(p, "print what was written as JSON")
    p.set_defaults(read=lambda c, a: artifacts.cmd_download(
        c, a.run_id, a.name, a.out, force=a.force, sha256=a.sha256,
        artifacts_dir=a.artifacts, as_json=a.json))

    p = sub.add_parser("lineage", help="which runs produced (and used) a file, directory "
                       "or sha256")
    p.add_argument("target", metavar="FILE_OR_SHA256")
    read_flags(p)
    p.set_defaults(read=lambda c, a: artifacts.cmd_lineage(c, a.target, a.json))

    p = sub.add_parser("history", help="a metric's points over steps")
    p.add_argument("run_id")
    p.add_argument("key")
    p.add_argument("--ranks", help="comma-separated ranks (default: all)")
    p.add_argument("--limit", type=int, default=0, help="print at most this many points (0: all)")
    p.add_argument("--max-points", type=int, default=0,
                   help="downsample each series to this many points (LTTB + min/max)")
    p.add_argument("--aggregate", type=_aggregate, metavar="{mean,min,max}",
                   help="one series across ranks per step")
    read_flags(p)
    p.set_defaults(read=lambda c, a: metrics.cmd_history(
        c, a.run_id, a.key, [int(r) for r in a.ranks.split(",")] if a.ranks else None, a.limit,
        a.json, max_points=a.max_points, aggregate=a.aggregate or ""))

    p = sub.add_parser("compare", help="runs side by side, differences first")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--keys", help="comma-separated metric keys (default: all)")
    p.add_argument("--all", action="store_true", help="also show identical fields")
    read_flags(p)
    p.set_defaults(read=lambda c, a: runs.cmd_compare(c, a.run_ids, _keys(a.keys), a.all,
                                                       a.json))

    p = sub.add_parser("reproduce", help="what it takes to reproduce a run")
    p.add_argument("run_id")
    read_flags(p)
    p.set_defaults(read=lambda c, a: runs.cmd_reproduce(c, a.run_id, a.json))

    p = sub.add_parser("follow", help="stream a live run's points and status changes")
    p.add_argument("run_id")
    p.add_argument("--keys", help="comma-separated metric keys (default: all)")
    p.add_argument("--from-step", type=int, default=0, help="backfill from this step (-1: none)")
    read_flags(p, "print one JSON object per line instead of text")
    p.set_defaults(read=lambda c, a: metrics.cmd_follow(c, a.run_id, _keys(a.keys), a.from_step,
                                                         sys.stdout, as_json=a.json))

    p = sub.add_parser("plot", help="plot a metric of runs to a PNG (needs matplotlib)")
    p.add_argument("run_ids", nargs="+")
    p.add_argument("--key", required=True)
    p.add_argument("--out", default="plot.png")
    p.add_argument("--max-points", type=int, default=1000)
    read_flags(p, "print what was plotted (file, series, point counts) as JSON")
    p.set_defaults(read=lambda c, a: metrics.cmd_plot(c, a.run_ids, a.key, a.out,
                                                       a.max_points, a.json))

    p = sub.add_parser("experiments", help="experiments and their run counts")
    read_flags(p)
    p.set_defaults(read=lambda c, a: runs.cmd_experiments(c, a.json))

    p = sub.add_parser("ranks", help="which rank of a run is slow or broken")
    p.add_argument("run_id")
    p.add_argument("--step-time-key", default="",
                   help="metric holding the step time in seconds (telemetry/step_time_s)")
    p.add_argument("--lag-key", default="", help="metric whose timestamps give each rank's "
                   "lag (default: the step-time key, else the key with the most points)")
    read_flags(p)
    p.set_defaults(read=lambda c, a: ranks.cmd_ranks(c, a.run_id, a.json,
                                                      step_time_key=a.step_time_key,
                                                      lag_key=a.lag_key))

    p = sub.add_parser("status", help="ingestion progress of the consumers (last minute)")
    read_flags(p)
    p.set_defaults(read=lambda c, a: services.cmd_status(c, a.json))
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a real file (captured in tests): nothing will flush it


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status: 0, 1 (the service reported an error),
    2 (bad arguments or configuration), 130 (Ctrl-C), 141 (stdout closed early, as in
    ``runstream runs | head``: no traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        read: ReadCommand | None = getattr(args, "read", None)
        if read is None:
            status = int(args.func(args))
        else:
            with _client(args) as client:
                status = int(read(client, args))
        sys.stdout.flush()  # a closed pipe shows here, not in the flush at exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except RunstreamError as e:
        print(f"runstream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
