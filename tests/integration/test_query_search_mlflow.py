"""SearchRuns through the real engine with MLflow's own search cases ported
(mlflow tests/utils/test_search_utils.py: test_correct_sorting, test_correct_filtering,
test_filter_runs_by_tag_and_param_is_null, test_filter_runs_by_end_time,
test_filter_runs_by_user_id, test_order_by_metric_with_nans_infs_nones)."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError
from runstream.query.client import Client
from tests.factories import T0, ids, insert, set_status, start_rank


def _metric(run_id: str, key: str, value: float) -> dict[str, Any]:
    return {"run_id": run_id, "key": key, "rank": 0, "step": 0, "value": value, "ts_ms": T0,
            "producer_id": "p0", "seq": 5, "idx": 0}


def _kv(run_id: str, key: str, value: str) -> dict[str, Any]:
    return {"run_id": run_id, "key": key, "value": value, "rank": 0, "producer_id": "p0",
            "seq": 2, "ts_ms": T0}


def _seed_mlflow_runs(ch: Any) -> None:
    """MLflow's three runs "9", "8", "7" (test_correct_sorting), plus "6", still running,
    in another experiment. Runs 8 and 7 start together, so run id breaks the tie."""
    for run_id, start, status, key1, my_param in [("9", T0, "FAILED", 121, "A"),
                                                   ("8", T0 + 1, "FINISHED", 123, "A"),
                                                   ("7", T0 + 1, "FAILED", 125, "B")]:
        start_rank(ch, run_id, 0, 1, start, experiment="mlf")
        set_status(ch, run_id, 0, status, T0 + (600 if run_id == "8" else 500), seq=9,
                   experiment="mlf")
        insert(ch, tables.METRICS, [_metric(run_id, "key1", key1)])
        insert(ch, tables.PARAMS, [{**_kv(run_id, "my_param", my_param), "type": "STRING"}])
    start_rank(ch, "6", 0, 1, T0 + 2, experiment="live")
    insert(ch, tables.TAGS, [_kv("8", "tag1", "C"), _kv("7", "tag1", "D"),
                             _kv("8", "mlflow.user", "user-id2")])
    insert(ch, tables.PARAMS, [{**_kv("8", "lr", "0.01"), "type": "FLOAT"}])
    insert(ch, tables.ARTIFACTS, [
        {"run_id": "9", "name": "model", "uri": "s3://b/9/model", "producer_id": "p0",
         "seq": 7, "ts_ms": T0},
        {"run_id": "8", "name": "model", "uri": "file:///a/blobs/x", "producer_id": "p0",
         "seq": 7, "ts_ms": T0},
        {"run_id": "8", "name": "plot", "uri": "s3://b/8/plot", "producer_id": "p0",
         "seq": 8, "ts_ms": T0},
    ])


# MLflow's expected index lists, with its runs [0, 1, 2] = "9", "8", "7".
SORT_CASES = [
    ([], ["7", "8", "9"]),
    (["tags.noSuchTag"], ["7", "8", "9"]),
    (["attributes.status"], ["7", "9", "8"]),
    (["attributes.start_time"], ["9", "7", "8"]),
    (["metrics.key1 asc"], ["9", "8", "7"]),
    (['metrics."key1"  desc'], ["7", "8", "9"]),
    (["params.my_param"], ["8", "9", "7"]),
    (["params.my_param aSc", "attributes.status  ASC"], ["9", "8", "7"]),
    (["params.my_param", "attributes.status DESC"], ["8", "9", "7"]),
    (["params.my_param DESC", "attributes.status   DESC"], ["7", "8", "9"]),
    (["params.`my_param` DESC", "attributes.status DESC"], ["7", "8", "9"]),
    (["tags.tag1"], ["8", "7", "9"]),
    (["tags.tag1    DESC"], ["7", "8", "9"]),
    (["attributes.artifact_uri"], ["8", "9", "7"]),  # lowest URI; runs without last
]


def test_mlflow_sorting_and_ties(ch: Any, client: Client) -> None:
    """Every case on one seeded store (a store per case costs seconds each)."""
    _seed_mlflow_runs(ch)
    for order_by, expected in SORT_CASES:
        got = ids(client.search_runs("mlf", order_by=order_by)[0])
        assert got == expected, order_by
        paged: list[str] = []
        token = ""
        while True:  # keyset pages of one run keep the same order
            runs, token = client.search_runs("mlf", page_size=1, page_token=token,
                                             order_by=order_by)
            paged += ids(runs)
            if not token:
                break
        assert paged == expected, order_by


FILTER_CASES = [
    # test_correct_filtering
    ("attributes.status = 'FAILED'", {"9", "7"}),
    ("metrics.key1 = 123", {"8"}),
    ("metrics.key1 != 123", {"9", "7"}),
    ("metrics.key1 >= 123", {"8", "7"}),
    ("params.my_param = 'A'", {"9", "8"}),
    ("tags.tag1 = 'D'", {"7"}),
    ("tags.tag1 != 'D'", {"8"}),
    ("params.my_param = 'A' AND attributes.status = 'FAILED'", {"9"}),
    # test_filter_runs_by_tag_and_param_is_null, and IS NULL combined with AND
    ("tags.tag1 IS NOT NULL", {"8", "7"}),
    ("tags.tag1 IS NULL", {"9", "6"}),
    ("params.lr IS NOT NULL", {"8"}),
    ("params.lr is null", {"9", "7", "6"}),
    ("tags.tag1 IS NOT NULL AND params.lr IS NULL", {"7"}),
    ("params.my_param IS NULL AND `tags`.tag1 IS NULL", {"6"}),
    # test_filter_runs_by_end_time: a running run has no end time
    ("attribute.end_time >= 0", {"9", "8", "7"}),
    (f"attribute.end_time > {T0 + 550}", {"8"}),
    (f"attribute.end_time = {T0 + 500}", {"9", "7"}),
    (f"end_time < {T0 + 550}", {"9", "7"}),
    # test_filter_runs_by_user_id: the mlflow.user tag
    ("attribute.user_id = 'user-id2'", {"8"}),
    ("attributes.user_id != 'user-id2'", {"9", "7", "6"}),
    # artifact_uri: any of the run's artifacts; a negated operator: none of them
    ("attributes.artifact_uri LIKE 's3://b/%'", {"9", "8"}),
    ("attributes.artifact_uri NOT LIKE 's3://%'", {"7", "6"}),
    ("attributes.artifact_uri = 'file:///a/blobs/x'", {"8"}),
    ("attributes.artifact_uri != 'file:///a/blobs/x'", {"9", "7", "6"}),
    # back-quoted kinds and aliases
    ("`metric`.key1 >= 123 AND `params`.my_param = 'B'", {"7"}),
    ("parameter.my_param = 'A' AND tag.tag1 = 'C' AND run.status = 'FINISHED'", {"8"}),
    ("attr.run_id IN ('9', '6') AND attributes.created >= 0", {"9", "6"}),
    ("status = 'RUNNING'", {"6"}),
]


def test_mlflow_filters(ch: Any, client: Client) -> None:
    _seed_mlflow_runs(ch)
    for text, expected in FILTER_CASES:
        assert set(ids(client.search_runs(filter=text, page_size=100)[0])) == expected, text


def test_order_by_metric_with_nans_infs_nones(ch: Any, client: Client) -> None:
    values = {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"),
              "m1000": -1000.0, "0": 0.0, "1000": 1000.0}
    for run_id in [*values, "none"]:
        start_rank(ch, run_id, 0, 1, T0, experiment="nan")
    insert(ch, tables.METRICS, [_metric(r, "x", v) for r, v in values.items()])
    asc = ["ninf", "m1000", "0", "1000", "inf", "nan", "none"]
    desc = ["inf", "1000", "0", "m1000", "ninf", "nan", "none"]
    for order, expected in ((["metrics.x asc"], asc), (["metrics.x desc"], desc)):
        assert ids(client.search_runs("nan", order_by=order)[0]) == expected
        paged: list[str] = []
        token = ""
        while True:
            runs, token = client.search_runs("nan", page_size=2, page_token=token,
                                             order_by=order)
            paged += ids(runs)
            if not token:
                break
        assert paged == expected


BAD_FILTERS = [
    ("metrics.key1 IS NULL", 13), ("attribute.status IS NULL", 17),
    ("attribute.status IS 'RUNNING'", 20), ("`dummy`.A > 0.1", 0),
    ("tags.x IS NULL OR tags.y IS NULL", 15),
]


def test_bad_mlflow_filters_name_the_position(ch: Any, client: Client) -> None:
    for text, position in BAD_FILTERS:
        with pytest.raises(InvalidArgumentError, match=f"at position {position}"):
            client.search_runs(filter=text)
