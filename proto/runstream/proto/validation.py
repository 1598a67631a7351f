"""Contract checks on decoded events (the limits documented in events.proto).

Pure functions: the consumer dead-letters what fails here, the producer SDK checks
user input against the same limits before anything is queued, and the query service
checks requests with them. The checks every side shares (:func:`check_run_id`,
:func:`check_key`) take the error class each side raises.
"""

from __future__ import annotations

import re

from runstream.proto import status
from runstream.proto.errors import ValidationError
from runstream.proto.v1 import events_pb2

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_EXPERIMENT_LEN = 256
MAX_RUN_NAME_LEN = 256
MAX_NODE_LEN = 256
MAX_KEY_LEN = 250
MAX_PARAM_VALUE_LEN = 6000
MAX_TAG_VALUE_LEN = 5000
MAX_NAME_LEN = 1024
MAX_URI_LEN = 4096
MAX_COMMAND_LEN = 4096
#: RunStarted's argv: at most this many arguments, each at most MAX_ARG_LEN characters;
#: cwd and script (relative to the repository root) at most MAX_PATH_LEN.
MAX_ARGS = 1000
MAX_ARG_LEN = 4096
MAX_PATH_LEN = 4096
LAUNCHERS = frozenset(("torchrun", "slurm", "openmpi", "pmi", "none"))
MAX_DIGEST_LEN = 256
MAX_ROLE_LEN = 64
MAX_TEXT_LEN = 65536
MAX_DROP_REASONS = 1000
MAX_REASON_LEN = 256
MAX_WORLD_SIZE = 1 << 20
MAX_POINTS_PER_BATCH = 1_000_000
MAX_KEYS_PER_BATCH = 100_000
MAX_ITEMS_PER_EVENT = 100_000
#: Steps are int64 on the wire (protobuf and Avro): 0..2**63 - 1.
MAX_STEP = (1 << 63) - 1
# Years 1970..2400 in epoch milliseconds: anything outside is a corrupt clock or field.
MAX_TS_MS = 13_569_465_600_000
_PARAM_TYPES = frozenset(
    (events_pb2.STRING, events_pb2.INT, events_pb2.FLOAT, events_pb2.BOOL)
)
_ENDED = frozenset(events_pb2.RunStatus.Value(name) for name in status.ENDED)
_ARCHIVE_ACTIONS = frozenset(v.number for v in events_pb2.ArchiveAction.DESCRIPTOR.values)


def check_run_id(
    run_id: object, *, name: str = "run_id", error: type[Exception] = ValidationError
) -> str:
    """``run_id`` if it is 1..64 characters of letters, digits, '.', '_', '-'; else
    ``error`` naming ``name`` (an argument or a variable)."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise error(f"{name}={run_id!r:.80}: expected 1..64 characters of letters, digits,"
                    " '.', '_', '-'")
    return run_id


def wire_text(text: str) -> str:
    """``text`` made encodable, for texts the SDK reports rather than takes from the user
    (command line, host name, tracebacks): bytes ``os.fsdecode`` could not decode (lone
    surrogates U+DC80..U+DCFF) become ``\\xNN``, any other lone surrogate "?"."""
    if encodable(text):
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def encodable(text: str) -> bool:
    """True when ``text`` is valid Unicode for the wire: no lone surrogate (what
    ``os.fsdecode`` makes of a file name that is not UTF-8, e.g. "loss\udcff"), which
    neither protobuf nor Avro can encode."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_key(kind: str, key: object, *, error: type[Exception] = ValidationError) -> str:
    """``key`` if it is a string of 1..250 characters without lone surrogates; else
    ``error`` naming the ``kind`` of key ("metric", "param", "tag")."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LEN:
        raise error(f"{kind} key {key!r:.80} must be a string of 1..{MAX_KEY_LEN} characters")
    if not encodable(key):
        raise error(f"{kind} key {key!r:.80} is not valid Unicode (a lone surrogate, as "
                    "from a file name that is not UTF-8)")
    return key


def check_text(what: str, text: object, limit: int, *, error: type[Exception] = ValidationError,
               empty: bool = True) -> str:
    """``text`` if it is a string of at most ``limit`` characters (and not empty unless
    ``empty``) without lone surrogates; else ``error`` naming ``what``."""
    if not isinstance(text, str):
        raise error(f"{what} must be a string, not {type(text).__name__}")
    if len(text) > limit or (not empty and not text):
        low = 0 if empty else 1
        raise error(f"{what} is {len(text)} characters; expected {low}..{limit}")
    if not encodable(text):
        raise error(f"{what} {text!r:.80} is not valid Unicode (a lone surrogate, as from a "
                    "file name that is not UTF-8)")
    return text


def _check_len(what: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValidationError(f"{what} is {len(value)} characters, over the limit of {limit}")


def validate(event: events_pb2.RunEvent) -> None:
    """Raise ValidationError naming the first broken rule; return None if the event is valid."""
    check_run_id(event.run_id)
    if not event.experiment or len(event.experiment) > MAX_EXPERIMENT_LEN:
        raise ValidationError(f"experiment must be 1..{MAX_EXPERIMENT_LEN} characters")
    if not 1 <= event.world_size <= MAX_WORLD_SIZE:
        raise ValidationError(f"world_size {event.world_size} out of range 1..{MAX_WORLD_SIZE}")
    if event.rank >= event.world_size:
        raise ValidationError(f"rank {event.rank} not below world_size {event.world_size}")
    if not event.producer_id or len(event.producer_id) > 64:
        raise ValidationError("producer_id must be 1..64 characters")
    if event.seq == 0:
        raise ValidationError("seq must start at 1")
    if not 0 < event.ts_ms < MAX_TS_MS:
        raise ValidationError(f"ts_ms {event.ts_ms} is not a plausible epoch-milliseconds time")
    _check_len("node", event.node, MAX_NODE_LEN)
    body = event.WhichOneof("body")
    if body is None:
        raise ValidationError("event has no body")
    if body == "metrics":
        _validate_metrics(event.metrics)
    elif body == "params":
        _check_count("params", len(event.params.params))
        for p in event.params.params:
            check_key("param", p.key)
            _check_len(f"param {p.key!r} value", p.value, MAX_PARAM_VALUE_LEN)
            if p.type not in _PARAM_TYPES:
                raise ValidationError(f"param {p.key!r} has no known type ({p.type})")
    elif body == "tags":
        _check_count("tags", len(event.tags.tags))
        for t in event.tags.tags:
            check_key("tag", t.key)
            _check_len(f"tag {t.key!r} value", t.value, MAX_TAG_VALUE_LEN)
    elif body == "artifact":
        a = event.artifact
        if not a.name:
            raise ValidationError("artifact has no name")
        _check_len("artifact name", a.name, MAX_NAME_LEN)
        _check_len("artifact uri", a.uri, MAX_URI_LEN)
        if not re.fullmatch(r"[0-9a-f]{64}", a.sha256):
            raise ValidationError("artifact sha256 must be 64 lowercase hex digits")
    elif body == "input":
        i = event.input
        if not i.uri:
            raise ValidationError("input has no uri")
        _check_len("input uri", i.uri, MAX_URI_LEN)
        _check_len("input name", i.name, MAX_NAME_LEN)
        _check_len("input digest", i.digest, MAX_DIGEST_LEN)
        _check_len("input role", i.role, MAX_ROLE_LEN)
    elif body == "run_started":
        s = event.run_started
        _check_len("run name", s.name, MAX_RUN_NAME_LEN)
        _check_len("command", s.env.command, MAX_COMMAND_LEN)
        _validate_launch(s, event.world_size)
        for what, text in (("git commit", s.code.git_commit), ("git branch", s.code.git_branch),
                           ("git remote", s.code.git_remote)):
            _check_len(what, text, MAX_NAME_LEN)
    elif body == "annotation":
        _validate_annotation(event.annotation)
    elif body == "run_finished":
        f = event.run_finished
        if f.status not in _ENDED:
            raise ValidationError(
                f"run_finished status {f.status} is not FINISHED, FAILED or KILLED"
                " (CRASHED is set by the consumer side, never sent)"
            )
        _check_len("error", f.error, MAX_TEXT_LEN)
        if len(f.dropped) > MAX_DROP_REASONS:
            raise ValidationError(f"run_finished lists {len(f.dropped)} drop reasons, over "
                                  f"the limit of {MAX_DROP_REASONS}")
        for d in f.dropped:
            if not 0 < len(d.reason) <= MAX_REASON_LEN:
                raise ValidationError(f"drop reason must be 1..{MAX_REASON_LEN} characters")


def _validate_launch(s: events_pb2.RunStarted, world_size: int) -> None:
    if len(s.env.argv) > MAX_ARGS:
        raise ValidationError(f"argv has {len(s.env.argv)} arguments, over the limit of "
                              f"{MAX_ARGS}")
    for i, arg in enumerate(s.env.argv):
        _check_len(f"argv[{i}]", arg, MAX_ARG_LEN)
    for what, path in (("cwd", s.code.cwd), ("script", s.code.script)):
        _check_len(what, path, MAX_PATH_LEN)
        # reproduce cds into these on another machine: an absolute path is not portable.
        if path.startswith("/"):
            raise ValidationError(f"{what} {path[:80]!r} must be relative to the repository"
                                  " root")
    if s.env.launcher and s.env.launcher not in LAUNCHERS:
        raise ValidationError(f"launcher {s.env.launcher[:80]!r} is not one of "
                              f"{', '.join(sorted(LAUNCHERS))}")
    for what, n in (("nnodes", s.env.nnodes), ("nproc_per_node", s.env.nproc_per_node)):
        if n > world_size:
            raise ValidationError(f"{what} {n} is over world_size {world_size}")
    if s.fork_run_id:
        check_run_id(s.fork_run_id, name="fork_run_id")
    elif s.fork_step:
        raise ValidationError("fork_step is set but fork_run_id is empty")
    if s.fork_step < 0:
        raise ValidationError(f"fork_step {s.fork_step} is negative")


#: Who made an after-the-fact change: user and host names, 1..this many characters.
MAX_WHO_LEN = 256


def _validate_annotation(a: events_pb2.Annotation) -> None:
    if not (a.tags or a.note or a.archive):
        raise ValidationError("annotation sets no tag, note or archive state")
    if len(a.tags) > MAX_ITEMS_PER_EVENT:
        raise ValidationError(f"{len(a.tags)} tags in one annotation, over the limit of "
                              f"{MAX_ITEMS_PER_EVENT}")
    for t in a.tags:
        check_key("tag", t.key)
        _check_len(f"tag {t.key!r} value", t.value, MAX_TAG_VALUE_LEN)
    _check_len("note", a.note, MAX_TEXT_LEN)
    if a.archive not in _ARCHIVE_ACTIONS:
        raise ValidationError(f"annotation archive action {a.archive} is not known")
    for what, text in (("user", a.user), ("host", a.host)):
        if not 0 < len(text) <= MAX_WHO_LEN:
            raise ValidationError(f"annotation {what} must be 1..{MAX_WHO_LEN} characters")


def _check_count(what: str, n: int) -> None:
    if n == 0:
        raise ValidationError(f"{what} event is empty")
    if n > MAX_ITEMS_PER_EVENT:
        raise ValidationError(f"{n} {what} in one event, over the limit of {MAX_ITEMS_PER_EVENT}")


def _validate_metrics(m: events_pb2.MetricsBatch) -> None:
    n = len(m.steps)
    if n == 0:
        raise ValidationError("metrics batch has no points")
    if n > MAX_POINTS_PER_BATCH:
        raise ValidationError(f"{n} points in one batch, over the limit of {MAX_POINTS_PER_BATCH}")
    if not len(m.key_index) == len(m.values) == len(m.ts_ms) == n:
        raise ValidationError(
            f"metrics columns differ in length: key_index={len(m.key_index)} "
            f"steps={n} values={len(m.values)} ts_ms={len(m.ts_ms)}"
        )
    nkeys = len(m.keys)
    if nkeys == 0 or nkeys > MAX_KEYS_PER_BATCH:
        raise ValidationError(f"metrics key table has {nkeys} keys (1..{MAX_KEYS_PER_BATCH})")
    for key in m.keys:
        check_key("metric", key)
    # numpy scans the packed arrays ~50x faster than min()/max() over the containers;
    # imported here so that `import runstream` in a training script does not load it.
    import numpy as np

    key_index = np.asarray(m.key_index)
    if int(key_index.max()) >= nkeys:
        raise ValidationError(f"metrics key_index {int(key_index.max())} outside the key table")
    ts_ms = np.asarray(m.ts_ms)
    if int(ts_ms.min()) <= 0 or int(ts_ms.max()) >= MAX_TS_MS:
        raise ValidationError("metrics ts_ms outside plausible epoch milliseconds")
    lowest_step = int(np.asarray(m.steps).min())
    if lowest_step < 0:
        raise ValidationError(f"metrics step {lowest_step} is negative")

