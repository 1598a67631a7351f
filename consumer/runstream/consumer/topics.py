"""The Kafka topics Runstream uses, created by the consumer with the partitions and
replication the deployment asks for, instead of by the broker's auto-creation.

``runstream consume`` and ``runstream serve`` (with Kafka) call :func:`ensure_topics`
before they join the consumer group. A missing topic is created: the events topic with
``RUNSTREAM_TOPIC_PARTITIONS`` partitions and ``RUNSTREAM_TOPIC_REPLICATION`` replicas
(each unset: the broker's default), the dead-letter topic with the same replication and
the broker's default partitions; with a replication factor set, ``min.insync.replicas`` is
set too (:func:`min_insync_for`: 2 of 3 replicas), so that the SDK's ``acks=all`` means
"on two brokers". A topic that exists with other settings than those asked for is never
used silently: :func:`ensure_topics` raises :class:`ConfigError` naming each difference,
and the consumer does not start. Settings the deployment leaves unset are not checked.

The SDK never creates topics (a training job needs no admin rights on the cluster): until
the topic exists, it spools, and it sends the spool once the consumer has created it.
The single-node development broker still auto-creates topics, so the SDK alone works
there as before.

:func:`plan` is the pure part (desired against existing: what to create, what differs);
:func:`ensure_topics` does the admin-client I/O around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runstream.proto import config as names
from runstream.proto.errors import ConfigError, UnavailableError

log = logging.getLogger(__name__)

#: Kafka's topic setting for the replicas that must have a record before ``acks=all``.
MIN_INSYNC = "min.insync.replicas"


def min_insync_for(replication: int) -> int:
    """The ``min.insync.replicas`` Runstream sets for ``replication`` replicas: 2 from 3
    replicas on (a write survives the loss of any one broker, and a second loss stops
    acknowledgements instead of leaving a single copy), else 1."""
    return 2 if replication >= 3 else 1


@dataclass(frozen=True, kw_only=True)
class TopicConfig:
    """What the deployment asks of the topics Runstream creates. None: the broker's
    default, and not checked on a topic that exists. Immutable."""

    #: Partitions of the events topic (``RUNSTREAM_TOPIC_PARTITIONS``).
    partitions: int | None = None
    #: Replicas of every Runstream topic (``RUNSTREAM_TOPIC_REPLICATION``).
    replication: int | None = None

    def __post_init__(self) -> None:
        if self.partitions is not None:
            names.check_int_range(names.TOPIC_PARTITIONS, self.partitions, 1, 100_000)
        if self.replication is not None:
            names.check_int_range(names.TOPIC_REPLICATION, self.replication, 1, 32)

    @property
    def min_insync_replicas(self) -> int | None:
        return None if self.replication is None else min_insync_for(self.replication)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TopicConfig:
        """Read ``RUNSTREAM_TOPIC_PARTITIONS`` and ``RUNSTREAM_TOPIC_REPLICATION``
        (``os.environ`` when ``environ`` is None); unset or empty: None."""
        env = names.environ_or_os(environ)

        def optional(name: str) -> int | None:
            return names.env_int(env, name, 0) if env.get(name, "") else None

        return cls(partitions=optional(names.TOPIC_PARTITIONS),
                   replication=optional(names.TOPIC_REPLICATION))


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as the deployment wants it; None fields: broker default, not checked.
    ``partitions_checked`` is False for the dead-letter topic (any count serves it);
    ``role`` names the topic in log lines."""

    name: str
    partitions: int | None
    replication: int | None
    min_insync: int | None
    partitions_checked: bool = True
    role: str = "topic"

    def describe(self) -> str:
        parts = [f"{self.partitions if self.partitions is not None else 'default'} partitions",
                 f"{self.replication if self.replication is not None else 'default'} replicas"]
        if self.min_insync is not None:
            parts.append(f"{MIN_INSYNC}={self.min_insync}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class TopicState:
    """One topic as the cluster has it (replication: the fewest replicas of any partition;
    ``min_insync``: the effective setting, topic or broker default)."""

    name: str
    partitions: int
    replication: int
    min_insync: int | None = None

    def describe(self) -> str:
        out = f"{self.partitions} partitions, {self.replication} replicas"
        return out if self.min_insync is None else f"{out}, {MIN_INSYNC}={self.min_insync}"


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """What :func:`plan` found: topics to create, and differences from what was asked
    (one sentence each, naming the topic, the setting and the variable)."""

    create: tuple[TopicSpec, ...] = ()
    mismatches: tuple[str, ...] = ()
    existing: tuple[TopicState, ...] = field(default=())


def specs(config: TopicConfig, topic: str, dlq_topic: str) -> list[TopicSpec]:
    """The events topic and its dead-letter topic as ``config`` asks for them."""
    min_insync = config.min_insync_replicas
    return [
        TopicSpec(topic, config.partitions, config.replication, min_insync),
        TopicSpec(dlq_topic, None, config.replication, min_insync, partitions_checked=False,
                  role="dead-letter topic"),
    ]


def plan(wanted: Sequence[TopicSpec], existing: Mapping[str, TopicState]) -> TopicPlan:
    """Compare the topics ``wanted`` with those that exist. Pure."""
    create: list[TopicSpec] = []
    mismatches: list[str] = []
    found: list[TopicState] = []
    for spec in wanted:
        state = existing.get(spec.name)
        if state is None:
            create.append(spec)
            continue
        found.append(state)
        if spec.partitions_checked and spec.partitions is not None \
                and state.partitions != spec.partitions:
            mismatches.append(
                f"topic {spec.name} has {state.partitions} partitions, "
                f"{names.TOPIC_PARTITIONS} asks for {spec.partitions}")
        if spec.replication is not None and state.replication != spec.replication:
            mismatches.append(
                f"topic {spec.name} has {state.replication} replicas, "
                f"{names.TOPIC_REPLICATION} asks for {spec.replication}")
        if spec.min_insync is not None and state.min_insync != spec.min_insync:
            mismatches.append(
                f"topic {spec.name} has {MIN_INSYNC}={state.min_insync}, "
                f"{names.TOPIC_REPLICATION}={spec.replication} asks for {spec.min_insync}")
    return TopicPlan(tuple(create), tuple(mismatches), tuple(found))


def mismatch_error(mismatches: Sequence[str]) -> ConfigError:
    """The error the consumer stops with when topics exist with other settings."""
    return ConfigError(
        "Kafka topics exist with other settings than this deployment asks for: "
        + "; ".join(mismatches)
        + ". Change the topics (kafka-topics.sh --alter, kafka-configs.sh), or set the "
        "variables to what they have (unset: not checked).")


# --- the admin client's I/O ---------------------------------------------------------------


def _describe(admin: Any, topics: Sequence[str], check_min_insync: bool) -> dict[str, TopicState]:
    """The topics of ``topics`` that exist, as the cluster has them. Blocks."""
    from kafka.admin import ConfigResource, ConfigResourceType

    states: dict[str, TopicState] = {}
    for described in admin.describe_topics(list(topics)):
        partitions = described.get("partitions") or []
        if described.get("error_code", 0) != 0 or not partitions:
            continue  # unknown topic (3), or one still being created
        replication = min(len(p.get("replica_nodes") or ()) for p in partitions)
        states[described["name"]] = TopicState(described["name"], len(partitions), replication)
    if check_min_insync and states:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, [MIN_INSYNC])
                     for name in states]
        configs = admin.describe_configs(resources, config_filter="all").get("topic", {})
        for name, state in list(states.items()):
            value = (configs.get(name) or {}).get(MIN_INSYNC, {}).get("value")
            states[name] = TopicState(name, state.partitions, state.replication,
                                      int(value) if value is not None else None)
    return states


#: How long a difference may last before it counts: a topic another consumer created a
#: moment ago can be described before its settings are (min.insync.replicas reads as
#: unset for a while).
SETTLE_S = 5.0


def _settled(admin: Any, wanted: Sequence[TopicSpec], topics: Sequence[str],
             check_min_insync: bool, settle_s: float = SETTLE_S) -> TopicPlan:
    """:func:`plan` against the cluster, described again (every 0.2 s, up to
    ``settle_s``) while it finds differences, so that only lasting ones count."""
    deadline = time.monotonic() + settle_s
    while True:
        found = plan(wanted, _describe(admin, topics, check_min_insync))
        if not found.mismatches or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def _create(admin: Any, create: Sequence[TopicSpec]) -> list[TopicSpec]:
    """Create ``create``; returns those this call created. A topic that exists by now
    (another consumer's, or one this broker had not heard of yet) is skipped: the caller
    checks it again. Raises ConfigError for settings the cluster refuses."""
    from kafka.errors import (
        InvalidPartitionsError,
        InvalidReplicationFactorError,
        TopicAlreadyExistsError,
    )

    created: list[TopicSpec] = []
    for spec in create:
        options: dict[str, Any] = {}
        if spec.partitions is not None:
            options["num_partitions"] = spec.partitions
        if spec.replication is not None:
            options["replication_factor"] = spec.replication
        if spec.min_insync is not None:
            options["configs"] = {MIN_INSYNC: str(spec.min_insync)}
        try:
            admin.create_topics({spec.name: options})
        except TopicAlreadyExistsError:
            continue
        except (InvalidReplicationFactorError, InvalidPartitionsError) as e:
            raise ConfigError(
                f"cannot create topic {spec.name} with {spec.describe()} "
                f"({names.TOPIC_PARTITIONS}, {names.TOPIC_REPLICATION}): {_broker_message(e)}"
            ) from e
        log.info("created %s %s (%s)", spec.role, spec.name, spec.describe())
        created.append(spec)
    return created


def _broker_message(error: BaseException) -> str:
    """The broker's own sentence from a kafka-python admin error, else the error."""
    text = str(error)
    marker = "error_message='"
    start = text.find(marker)
    if start < 0:
        return text
    start += len(marker)
    end = text.find("'", start)
    return text[start:end] if end > start else text


def ensure_topics(
    bootstrap: Iterable[str],
    config: TopicConfig,
    topic: str,
    dlq_topic: str,
    *,
    client_id: str = "runstream-consumer",
    timeout_s: float = 30.0,
) -> TopicPlan:
    """Create the missing Runstream topics; raise ConfigError if one exists with other
    settings than ``config`` asks for; returns a plan of the topics it created and those it
    found (no mismatches). Blocks (admin requests, up to ``timeout_s`` for
    new topics to get their leaders). Raises UnavailableError when Kafka cannot be
    reached. Without the right to describe or create topics it logs a warning and
    returns when ``config`` asks for nothing; otherwise it raises ConfigError."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import AuthorizationError, KafkaError

    servers = list(bootstrap)
    wanted = specs(config, topic, dlq_topic)
    names_ = [s.name for s in wanted]
    check_min_insync = config.min_insync_replicas is not None
    try:
        admin = KafkaAdminClient(bootstrap_servers=servers, client_id=f"{client_id}-admin",
                                 reconnect_backoff_max_ms=1000)
    except KafkaError as e:
        raise UnavailableError(f"cannot reach Kafka at {servers}: {e}") from e
    try:
        try:
            first = _settled(admin, wanted, names_, check_min_insync)
            if first.mismatches:
                raise mismatch_error(first.mismatches)
            created: list[TopicSpec] = []
            if first.create:
                created = _create(admin, first.create)
                deadline = time.monotonic() + timeout_s
                while True:  # until every new topic has partitions (and leaders) to describe
                    final = _settled(admin, wanted, names_, check_min_insync)
                    if not final.create or time.monotonic() >= deadline:
                        break
                    time.sleep(0.2)
            else:
                final = first
        except AuthorizationError as e:
            if config.partitions is None and config.replication is None:
                log.warning("cannot check or create topics %s (%s); relying on the broker",
                            ", ".join(names_), e)
                return TopicPlan()
            raise ConfigError(f"cannot check or create topics {', '.join(names_)} as "
                              f"{names.TOPIC_PARTITIONS}/{names.TOPIC_REPLICATION} ask: {e}"
                              ) from e
        except KafkaError as e:
            raise UnavailableError(f"cannot check topics at {servers}: {e}") from e
        if final.mismatches:  # created by someone else meanwhile, with other settings
            raise mismatch_error(final.mismatches)
        if final.create:
            raise UnavailableError(f"topics {', '.join(s.name for s in final.create)} were "
                                   f"created but have no partitions after {timeout_s:.0f} s")
        made = {s.name for s in created}
        used = tuple(state for state in final.existing if state.name not in made)
        for state in used:
            log.info("using topic %s (%s)", state.name, state.describe())
        return TopicPlan(tuple(created), (), used)
    finally:
        admin.close()
