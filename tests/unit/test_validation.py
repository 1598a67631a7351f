"""runstream.proto.validation: the contract of events.proto, each broken rule named."""

from __future__ import annotations

import pytest

from runstream.proto.errors import ValidationError
from runstream.proto.v1 import events_pb2 as pb
from runstream.proto.validation import validate
from tests.factories import every_event_type, full_envelope


def test_every_well_formed_event_is_valid() -> None:
    for event in every_event_type():
        validate(event)


def _metrics() -> pb.RunEvent:
    return every_event_type()[2]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: setattr(e, "run_id", ""), "run_id"),
        (lambda e: setattr(e, "run_id", "a b"), "run_id"),
        (lambda e: setattr(e, "run_id", "x" * 65), "run_id"),
        (lambda e: setattr(e, "experiment", ""), "experiment"),
        (lambda e: setattr(e, "world_size", 0), "world_size"),
        (lambda e: setattr(e, "rank", 4), "rank"),
        (lambda e: setattr(e, "seq", 0), "seq"),
        (lambda e: setattr(e, "ts_ms", -1), "ts_ms"),
        (lambda e: setattr(e, "producer_id", ""), "producer_id"),
        (lambda e: e.metrics.values.append(1.0), "differ in length"),
        (lambda e: e.metrics.key_index.__setitem__(0, 9), "key table"),
        (lambda e: e.metrics.keys.__setitem__(0, ""), "metric key"),
        (lambda e: e.metrics.keys.__setitem__(0, "k" * 251), "metric key"),
        (lambda e: e.metrics.steps.__setitem__(0, -5), "negative"),
    ],
)
def test_broken_events_are_rejected_with_a_reason(mutate, reason: str) -> None:
    event = _metrics()
    mutate(event)
    with pytest.raises(ValidationError, match=reason):
        validate(event)


def test_event_without_body_is_rejected() -> None:
    with pytest.raises(ValidationError, match="no body"):
        validate(full_envelope())


def test_producer_cannot_claim_crashed() -> None:
    event = full_envelope()
    event.run_finished.status = pb.CRASHED
    with pytest.raises(ValidationError, match="CRASHED"):
        validate(event)


def test_oversized_param_value_is_rejected() -> None:
    event = full_envelope()
    event.params.params.add(key="k", value="v" * 6001, type=pb.STRING)
    with pytest.raises(ValidationError, match="over the limit"):
        validate(event)


@pytest.mark.parametrize("param_type", [0, 99])
def test_unknown_param_type_is_rejected(param_type: int) -> None:
    event = full_envelope()
    event.params.params.add(key="k", value="v", type=param_type)
    with pytest.raises(ValidationError, match="no known type"):
        validate(event)


def test_unknown_status_number_is_rejected() -> None:
    event = full_envelope()
    event.run_finished.status = 42  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="status"):
        validate(event)


@pytest.mark.parametrize("reasons, match", [
    ([""], "drop reason"),
    (["r" * 257], "drop reason"),
    ([f"r{i}" for i in range(1001)], "drop reasons"),
])
def test_bad_drop_accounts_are_rejected(reasons: list[str], match: str) -> None:
    event = full_envelope()
    event.run_finished.status = pb.FINISHED
    for reason in reasons:
        event.run_finished.dropped.add(reason=reason, events=1, points=1)
    with pytest.raises(ValidationError, match=match):
        validate(event)


def test_keys_and_texts_with_lone_surrogates_are_refused() -> None:
    from runstream.proto.validation import check_key, check_text, encodable

    assert encodable("ünïcode ☃") and encodable("ascii")
    assert not encodable("loss\udcff")
    with pytest.raises(ValidationError, match="Unicode"):
        check_key("metric", "loss\udcff")
    with pytest.raises(ValidationError, match="Unicode"):
        check_text("experiment", "e\ud800", 256)
    with pytest.raises(ValidationError, match=r"1\.\.256"):
        check_text("experiment", "", 256, empty=False)
    assert check_text("run name", "", 256) == ""


def test_the_sdk_drop_account_fits_the_run_finished_limits() -> None:
    from runstream.delivery import DeliveryAccount

    account = DeliveryAccount()
    for i in range(1500):
        account.drop(f"reason {i} " + "x" * 300, points=2)
    event = full_envelope()
    event.run_finished.status = pb.FINISHED
    for reason, events, points in account.drops():
        event.run_finished.dropped.add(reason=reason, events=events, points=points)
    validate(event)
    assert sum(d.points for d in event.run_finished.dropped) == 3000


def test_wire_text_keeps_undecodable_bytes_visible_and_always_encodes() -> None:
    from runstream.proto.validation import encodable, wire_text

    assert wire_text("train.py --lr 0.1") == "train.py --lr 0.1"
    assert wire_text("données") == "données"
    argv = "train.py data/caf\udce9.csv"  # os.fsdecode of a latin-1 file name
    assert wire_text(argv) == "train.py data/caf\\xe9.csv"
    assert wire_text("a\ud800b") == "a?b"
    assert all(encodable(wire_text(t)) for t in (argv, "a\ud800b", "\udcff" * 3))


def test_the_recorded_launch_is_checked_against_its_limits() -> None:
    from runstream.proto import validation
    from tests.factories import recorded_launch_started

    validation.validate(recorded_launch_started())
    for change, reason in (
        (lambda s: s.env.argv.extend(["a"] * validation.MAX_ARGS), "arguments"),
        (lambda s: s.env.argv.append("x" * (validation.MAX_ARG_LEN + 1)), "argv"),
        (lambda s: setattr(s.code, "cwd", "/home/alice/vision"), "relative"),
        (lambda s: setattr(s.code, "script", "y" * (validation.MAX_PATH_LEN + 1)), "script"),
        (lambda s: setattr(s.env, "launcher", "deepspeed"), "launcher"),
        (lambda s: setattr(s.env, "nproc_per_node", 5), "world_size"),
    ):
        event = recorded_launch_started()
        change(event.run_started)
        with pytest.raises(ValidationError, match=reason):
            validation.validate(event)
