"""SearchRuns through the real engine and gRPC: MLflow filters, order by, keyset pages."""

from __future__ import annotations

import math
from typing import Any

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError
from runstream.query.client import Client
from tests.factories import T0, ids, insert, seed_runs, start_rank


def test_search_runs_pages_without_gaps_or_duplicates(ch: Any, client: Client) -> None:
    runs: list[dict[str, Any]] = []
    for i in range(250):
        # Start times collide in groups of 3 so the run_id tie-break is exercised.
        runs.append({
            "run_id": f"run-{i:04d}", "rank": 0, "experiment": "big" if i % 5 else "other",
            "name": f"n{i}", "world_size": 2, "producer_id": "p", "seq": 1,
            "ts_ms": T0 + (i // 3) * 1000,
        })
    insert(ch, tables.RUNS, runs)
    insert(ch, tables.RUNS, runs[100:180])  # replayed inserts
    insert(ch, tables.RUNS, [{**r, "rank": 1, "ts_ms": r["ts_ms"] + 7} for r in runs[:50]])

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = client.search_runs(page_size=37, page_token=token)
        pages += 1
        assert len(page) <= 37
        seen.extend(r.run_id for r in page)
        if not token:
            break
    assert pages == math.ceil(250 / 37)
    assert len(seen) == len(set(seen)) == 250
    # MLflow's natural order: newest start first, then run id ascending.
    expected = sorted(runs, key=lambda r: (-r["ts_ms"], r["run_id"]))
    assert seen == [r["run_id"] for r in expected]

    big = [r.run_id for r in client.iter_runs("big", page_size=40)]
    assert big == [r["run_id"] for r in expected if r["experiment"] == "big"]
    first, _ = client.search_runs("other", page_size=1)
    assert first[0].run_id == "run-0245" and first[0].world_size == 2
    assert first[0].status == "RUN_STATUS_UNSPECIFIED"  # no status row was written


def test_token_of_another_filter_is_rejected(ch: Any, client: Client) -> None:
    insert(ch, tables.RUNS, [
        {"run_id": f"r{i}", "experiment": "a", "ts_ms": T0 + i} for i in range(3)
    ])
    _, token = client.search_runs("a", page_size=1)
    assert token
    with pytest.raises(InvalidArgumentError, match="different request"):
        client.search_runs("b", page_size=1, page_token=token)


def test_search_filters_mlflow_grammar(ch: Any, client: Client) -> None:
    seed_runs(ch)

    def search(f: str, **kw: Any) -> list[str]:
        return ids(client.search_runs(filter=f, page_size=100, **kw)[0])

    assert search("params.lr = '0.002'") == ["r01"]
    assert sorted(search("params.lr > 0.0095")) == ["r09", "r10", "r11"]  # numeric, not text
    assert sorted(search("metrics.val_acc >= 0.75 and tags.model LIKE 'bert%'")) == [
        "r09", "r11"]
    assert sorted(search("attributes.status = 'FINISHED' and params.batch IN (64)")) == [
        "r00", "r06"]
    assert sorted(search("min(metrics.loss) < 1")) == ["r00"]
    assert sorted(search("max(metrics.loss) >= 21")) == ["r11"]
    assert sorted(search("datasets.digest = 'sha1' AND metrics.val_acc > 0.7")) == [
        "r09", "r11"]
    assert search("tags.model ILIKE 'GPT%' and attributes.run_name = 'run4'") == ["r04"]
    assert search("params.lr = '0.002'", experiment="other") == []
    assert search("", experiments=["other"]) == ["r11", "r10"]
    assert search("tags.missing = 'x'") == []


def _kv(run_id: str, key: str, value: str, *, rank: int = 0, ts_ms: int = T0) -> dict[str, Any]:
    return {"run_id": run_id, "key": key, "value": value, "rank": rank,
            "producer_id": f"p{rank}", "seq": 2, "ts_ms": ts_ms, "experiment": "exp"}


def test_each_key_in_one_pass_keeps_its_own_value(ch: Any, client: Client) -> None:
    """Params and tags are read in one pass per table for every key named (as metrics
    are), datasets in one pass over the inputs: each key still gets its own value (a
    param's lowest rank's first, a tag's latest version), a run without the key matches no
    comparison, negated ones included, and a dataset clause asks whether any of the run's
    inputs, at its latest version, matches."""
    for i, run_id in enumerate(("a", "b", "c", "d")):
        start_rank(ch, run_id, 0, 2, T0 + i)
    insert(ch, tables.PARAMS, [
        # a: rank 1 logged lr first, but rank 0's value is the run's.
        {**_kv("a", "lr", "0.5", rank=1, ts_ms=T0 - 10), "type": "FLOAT"},
        {**_kv("a", "lr", "0.1"), "type": "FLOAT"},
        {**_kv("a", "opt", "adam"), "type": "STRING"},
        # b: a second value of lr logged later by rank 0 is a conflict, not the value.
        {**_kv("b", "lr", "0.3"), "type": "FLOAT"},
        {**_kv("b", "lr", "0.9", ts_ms=T0 + 50), "type": "FLOAT"},
        {**_kv("b", "opt", "sgd"), "type": "STRING"},
        # c: lr only, as text.
        {**_kv("c", "lr", "auto"), "type": "STRING"},
    ])
    insert(ch, tables.TAGS, [
        _kv("a", "team", "old"), _kv("a", "team", "new", ts_ms=T0 + 5),
        _kv("b", "team", "old"), _kv("c", "stage", "prod"), _kv("b", "mlflow.user", "ann"),
    ])

    def dataset(run_id: str, name: str, digest: str, ts_ms: int) -> dict[str, Any]:
        return {"run_id": run_id, "name": name, "rank": 0, "uri": f"s3://d/{name}",
                "digest": digest, "role": "training", "producer_id": "p0", "seq": 3,
                "ts_ms": ts_ms, "experiment": "exp"}

    # a's train set was logged again with a new digest (its latest version counts).
    insert(ch, tables.INPUTS, [dataset("a", "train", "d1", T0), dataset("a", "train", "d2", T0 + 9),
                               dataset("b", "train", "d1", T0), dataset("b", "eval", "e1", T0)])

    def search(f: str, order: list[str] | None = None) -> list[str]:
        return ids(client.search_runs(filter=f, page_size=100, order_by=order or [])[0])

    assert search("datasets.digest = 'd2'") == ["a"]
    assert search("datasets.digest = 'd1' and params.lr > 0") == ["b"]
    # Some input of the run matches (a negated operator too): b's eval set is not "train".
    assert search("datasets.name != 'train'") == ["b"]
    assert sorted(search("datasets.name IN ('train', 'x') and tags.team LIKE '%'")) == ["a", "b"]
    assert search("params.lr = '0.1'") == ["a"]
    assert search("params.lr = '0.5'") == search("params.lr = '0.9'") == []
    assert sorted(search("params.lr < 0.4")) == ["a", "b"]  # numeric: "auto" is no number
    assert search("params.lr > 0.2 and params.opt = 'sgd'") == ["b"]
    assert sorted(search("params.opt != 'adam' and params.lr != '0.2'")) == ["b"]
    assert search("tags.team = 'new'") == ["a"]
    assert search("tags.team != 'new'") == ["b"]
    assert search("tags.team = 'old' and params.opt LIKE 's%'") == ["b"]
    assert search("tags.stage = 'prod' and params.lr = 'auto'") == ["c"]
    # MLflow's user tag, as an attribute and as a tag in one search.
    assert search("attributes.user_id = 'ann' and tags.`mlflow.user` LIKE 'a%'") == ["b"]
    assert sorted(search("attributes.user_id != 'ann' and tags.team LIKE '%'")) == ["a"]
    assert sorted(search("params.opt IS NULL and tags.team IS NULL")) == ["c", "d"]
    assert search("params.opt IS NOT NULL and tags.stage IS NULL and params.lr > 0.2") == ["b"]
    # Order by a param of the pass that filters on another: numbers first, then text,
    # runs without it last; the same for tags.
    assert search("", ["params.lr"]) == ["a", "b", "c", "d"]
    assert search("", ["params.lr DESC"]) == ["b", "a", "c", "d"]
    assert search("params.lr != 'x'", ["params.opt DESC", "tags.team"]) == ["b", "a", "c"]
    assert search("", ["tags.team", "params.opt"]) == ["a", "b", "d", "c"]


def test_search_order_by_and_stable_pages(ch: Any, client: Client) -> None:
    seed_runs(ch)
    for order in (["metrics.val_acc DESC"], ["params.batch", "metrics.loss"],
                  ["tags.model DESC", "attributes.start_time"], ["min(metrics.loss) ASC"]):
        whole = ids(client.search_runs(page_size=100, order_by=order)[0])
        paged: list[str] = []
        token = ""
        while True:
            runs, token = client.search_runs(page_size=5, page_token=token, order_by=order)
            paged += ids(runs)
            if not token:
                break
        assert paged == whole and len(whole) == 12, order
    assert ids(client.search_runs(order_by=["metrics.val_acc DESC"])[0])[:2] == ["r11", "r10"]
    # Runs without the field sort last either way.
    start_rank(ch, "zz", 0, 1, T0 + 99_000)
    assert ids(client.search_runs(order_by=["metrics.val_acc DESC"])[0])[-1] == "zz"
    assert ids(client.search_runs(order_by=["metrics.val_acc ASC"])[0])[-1] == "zz"


@pytest.mark.parametrize(("text", "position"), [
    ("metrics.acc > 'high'", 14),
    ("params.lr = '0.1' OR params.lr = '0.2'", 18),
    ("foo.bar = 1", 0),
    ("metrics.acc > 1; DROP TABLE runs", 15),
    ("attributes.colour = 'red'", 11),
    ("metrics.acc >", 13),
])
def test_bad_filters_name_the_position(ch: Any, client: Client, text: str, position: int) -> None:
    with pytest.raises(InvalidArgumentError, match=f"at position {position}"):
        client.search_runs(filter=text)


def test_token_of_another_filter_or_order_is_rejected(ch: Any, client: Client) -> None:
    seed_runs(ch)
    _, token = client.search_runs(page_size=2, filter="metrics.val_acc > 0")
    with pytest.raises(InvalidArgumentError):
        client.search_runs(page_size=2, filter="metrics.val_acc > 0.1", page_token=token)
    with pytest.raises(InvalidArgumentError):
        client.search_runs(page_size=2, filter="metrics.val_acc > 0", page_token=token,
                           order_by=["metrics.loss"])
