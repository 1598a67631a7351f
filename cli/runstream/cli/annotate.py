"""The CLI's commands that change a run after the fact: ``tag``, ``note``, ``archive``.

The query service stays read-only: each command reads the run through it (so a wrong
run id is an error, and the change gets the run's experiment), then sends one
``Annotation`` event through the pipeline the run's own events took
(:func:`runstream.annotate.send_annotation`: Kafka when ``RUNSTREAM_KAFKA`` is set, else
the local spool that ``runstream serve`` ingests). The change shows in ``runstream
show`` once ingested.

Exit status: 0 once the change is durable (Kafka acknowledged it, or it is fsynced in
the spool); 1 when the run is unknown, the query service cannot be reached (then nothing
is sent: the run cannot be checked), or the event could be neither delivered nor
spooled; 2 for bad arguments (a malformed ``key=value``, a value over its limit),
refused before anything is read or sent.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from runstream.annotate import (
    ARCHIVE,
    KAFKA,
    RESTORE,
    RunChange,
    Sent,
    current_host,
    current_user,
    parse_tags,
    send_annotation,
)
from runstream.config import ProducerConfig
from runstream.proto import config as names
from runstream.proto.errors import (
    InvalidArgumentError,
    NotFoundError,
    RunstreamError,
    UnavailableError,
)

if TYPE_CHECKING:
    from runstream.query.client import Client
    from runstream.query.models import Run


def producer_config(args: argparse.Namespace) -> ProducerConfig:
    """Where the change goes: the SDK's variables, with the command's flags on top."""
    return names.with_explicit(ProducerConfig.from_env(), kafka=getattr(args, "kafka", None),
                               topic=getattr(args, "topic", None),
                               spool_dir=getattr(args, "spool_dir", None))


def change_of(args: argparse.Namespace) -> RunChange:
    """The change a parsed ``tag``/``note``/``archive`` command asks for (pure).
    InvalidArgumentError names the first bad argument."""
    if args.command == "tag":
        return RunChange(tags=parse_tags(args.tags))
    if args.command == "note":
        if not args.text.strip():
            raise InvalidArgumentError("the note is empty")
        return RunChange(note=args.text)
    return RunChange(archive=RESTORE if args.restore else ARCHIVE)


def describe(change: RunChange) -> str:
    """What a change does, in words: "tags set: a=1, b=2", "note added", "archived"."""
    parts = []
    if change.tags:
        parts.append("tags set: " + ", ".join(f"{k}={v}" for k, v in change.tags))
    if change.note:
        parts.append("note added")
    if change.archive == ARCHIVE:
        parts.append("archived")
    elif change.archive == RESTORE:
        parts.append("restored (no longer archived)")
    return "; ".join(parts)


def sent_text(run_id: str, change: RunChange, sent: Sent, kafka: str | None) -> str:
    """The line printed once a change is durable."""
    body = sent.event.annotation
    who = f"{body.user}@{body.host}"
    if sent.destination == KAFKA:
        where = f"sent to Kafka {sent.where}"
    elif kafka:
        where = (f"Kafka {kafka} did not answer: kept in the spool {sent.where}; "
                 "`runstream sync` sends it")
    else:
        where = f"written to the spool {sent.where} (`runstream serve` ingests it)"
    return f"run {run_id}: {describe(change)} (by {who}; {where})"


def _read_run(client: Client, run_id: str, err: TextIO) -> Run | None:
    try:
        return client.get_run(run_id)
    except NotFoundError:
        print(f"runstream: error: no run {run_id!r} is known to the query service at "
              f"{client.target}; nothing was sent", file=err)
    except UnavailableError as e:
        print(f"runstream: error: the query service at {client.target} is not reachable "
              f"({e}); the run cannot be checked, so nothing was sent. Start `runstream "
              f"serve` or point --addr / {names.QUERY_ADDR} at a running query service.",
              file=err)
    except RunstreamError as e:
        print(f"runstream: error: {e}; nothing was sent", file=err)
    return None


def cmd_annotate(client: Client, args: argparse.Namespace, *, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """Run ``tag``, ``note`` or ``archive``: check the arguments (InvalidArgumentError
    propagates: exit 2), read the run, send the change and wait until it is durable.
    Blocks (up to about 30 s while Kafka does not answer)."""
    out = out or sys.stdout
    err = err or sys.stderr
    change = change_of(args)
    config = producer_config(args)
    run = _read_run(client, args.run_id, err)
    if run is None:
        return 1
    try:
        sent = send_annotation(run.info.run_id, run.info.experiment, change, config,
                               user=current_user(), host=current_host())
    except RunstreamError as e:
        print(f"runstream: error: {e}", file=err)
        return 1
    print(sent_text(run.info.run_id, change, sent, config.kafka), file=out)
    return 0
