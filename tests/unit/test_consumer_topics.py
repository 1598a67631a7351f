"""The consumer's topic planning: what the deployment asks for against what exists."""

from __future__ import annotations

import pytest

from runstream.consumer import topics
from runstream.consumer.config import ConsumerConfig
from runstream.consumer.topics import (
    TopicConfig,
    TopicSpec,
    TopicState,
    min_insync_for,
    mismatch_error,
    plan,
    specs,
)
from runstream.proto.errors import ConfigError


def test_unset_variables_ask_for_broker_defaults() -> None:
    config = TopicConfig.from_env({})
    assert config == TopicConfig()
    assert config.min_insync_replicas is None
    events, dlq = specs(config, "runstream.events", "runstream.events.dlq")
    assert (events.partitions, events.replication, events.min_insync) == (None, None, None)
    assert dlq.name == "runstream.events.dlq"


def test_variables_are_read_and_min_insync_follows_replication() -> None:
    config = TopicConfig.from_env({"RUNSTREAM_TOPIC_PARTITIONS": "8",
                                   "RUNSTREAM_TOPIC_REPLICATION": "3"})
    assert (config.partitions, config.replication, config.min_insync_replicas) == (8, 3, 2)
    assert [min_insync_for(n) for n in (1, 2, 3, 5)] == [1, 1, 2, 2]
    events, dlq = specs(config, "t", "t.dlq")
    assert events == TopicSpec("t", 8, 3, 2)
    # The dead-letter topic: the same durability, the broker's partitions, any count.
    assert dlq == TopicSpec("t.dlq", None, 3, 2, partitions_checked=False,
                            role="dead-letter topic")


def test_consumer_config_carries_the_topic_settings() -> None:
    env = {"RUNSTREAM_TOPIC_REPLICATION": "3", "RUNSTREAM_HOME": "/tmp/rs-unit"}
    assert ConsumerConfig.from_env(env).topics == TopicConfig(replication=3)


@pytest.mark.parametrize(("env", "message"), [
    ({"RUNSTREAM_TOPIC_PARTITIONS": "four"}, "RUNSTREAM_TOPIC_PARTITIONS='four'"),
    ({"RUNSTREAM_TOPIC_PARTITIONS": "0"}, "RUNSTREAM_TOPIC_PARTITIONS=0"),
    ({"RUNSTREAM_TOPIC_REPLICATION": "-1"}, "RUNSTREAM_TOPIC_REPLICATION=-1"),
    ({"RUNSTREAM_TOPIC_REPLICATION": "1.5"}, "RUNSTREAM_TOPIC_REPLICATION='1.5'"),
])
def test_malformed_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TopicConfig.from_env(env)


def test_missing_topics_are_created_and_matching_ones_used() -> None:
    wanted = specs(TopicConfig(partitions=4, replication=3), "t", "t.dlq")
    assert plan(wanted, {}).create == tuple(wanted)
    existing = {"t": TopicState("t", 4, 3, 2)}
    result = plan(wanted, existing)
    assert [s.name for s in result.create] == ["t.dlq"]
    assert result.mismatches == ()
    assert result.existing == (existing["t"],)


def test_a_topic_with_other_settings_is_reported_setting_by_setting() -> None:
    wanted = specs(TopicConfig(partitions=8, replication=3), "t", "t.dlq")
    result = plan(wanted, {"t": TopicState("t", 4, 1, 1), "t.dlq": TopicState("t.dlq", 1, 3, 1)})
    assert result.create == ()
    assert result.mismatches == (
        "topic t has 4 partitions, RUNSTREAM_TOPIC_PARTITIONS asks for 8",
        "topic t has 1 replicas, RUNSTREAM_TOPIC_REPLICATION asks for 3",
        "topic t has min.insync.replicas=1, RUNSTREAM_TOPIC_REPLICATION=3 asks for 2",
        "topic t.dlq has min.insync.replicas=1, RUNSTREAM_TOPIC_REPLICATION=3 asks for 2",
    )
    error = mismatch_error(result.mismatches)
    assert isinstance(error, ConfigError)
    assert "topic t has 4 partitions" in str(error) and "kafka-topics.sh --alter" in str(error)


def test_more_replicas_than_asked_is_a_difference_too() -> None:
    result = plan(specs(TopicConfig(replication=1), "t", "t.dlq"),
                  {"t": TopicState("t", 4, 3, 1), "t.dlq": TopicState("t.dlq", 1, 1, 1)})
    assert result.mismatches == ("topic t has 3 replicas, RUNSTREAM_TOPIC_REPLICATION asks for 1",)


def test_settings_left_unset_are_not_checked() -> None:
    result = plan(specs(TopicConfig(), "t", "t.dlq"),
                  {"t": TopicState("t", 1, 1, 1), "t.dlq": TopicState("t.dlq", 7, 1, None)})
    assert result.create == () and result.mismatches == ()
    # Only partitions asked for: replication and min.insync.replicas stay unchecked.
    result = plan(specs(TopicConfig(partitions=1), "t", "t.dlq"),
                  {"t": TopicState("t", 1, 1, 1), "t.dlq": TopicState("t.dlq", 7, 1, None)})
    assert result.mismatches == ()


def test_descriptions_say_what_was_asked_and_found() -> None:
    assert TopicSpec("t", 4, 3, 2).describe() == "4 partitions, 3 replicas, min.insync.replicas=2"
    assert TopicSpec("t", None, None, None).describe() == "default partitions, default replicas"
    assert TopicState("t", 4, 3, 2).describe() == "4 partitions, 3 replicas, min.insync.replicas=2"


def test_a_difference_that_settles_is_not_reported(monkeypatch) -> None:
    """A topic another consumer created a moment ago is described before its settings
    are (min.insync.replicas reads as unset): described again, it matches, no error. A
    difference that lasts is reported."""
    wanted = specs(TopicConfig(partitions=4, replication=3), "ev", "ev.dlq")
    answers = [
        {"ev": TopicState("ev", 4, 3, 2), "ev.dlq": TopicState("ev.dlq", 1, 3, None)},
        {"ev": TopicState("ev", 4, 3, 2), "ev.dlq": TopicState("ev.dlq", 1, 3, 2)},
    ]
    monkeypatch.setattr(topics, "_describe", lambda *_: answers.pop(0))
    monkeypatch.setattr(topics.time, "sleep", lambda _s: None)
    assert topics._settled(None, wanted, ["ev", "ev.dlq"], True).mismatches == ()
    assert answers == []
    lasting = {"ev": TopicState("ev", 2, 3, 2), "ev.dlq": TopicState("ev.dlq", 1, 3, 2)}
    monkeypatch.setattr(topics, "_describe", lambda *_: lasting)
    found = topics._settled(None, wanted, ["ev", "ev.dlq"], True, settle_s=0.0)
    assert found.mismatches == ("topic ev has 2 partitions, RUNSTREAM_TOPIC_PARTITIONS asks "
                                "for 4",)
