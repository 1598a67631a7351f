"""RowBatch: every event type to the rows of runstream.proto.tables."""

from __future__ import annotations

import math

import pytest

from runstream.consumer.rows import RowBatch
from runstream.proto import tables
from runstream.proto.errors import ValidationError
from runstream.proto.v1 import events_pb2 as pb
from tests.factories import TS, envelope, metrics_event, sample_run
from tests.helpers import row_count, table_columns


def table_rows(batch: RowBatch, table: tables.Table) -> list[dict[str, object]]:
    columns = table_columns(batch, table)
    return [dict(zip(table.column_names, row, strict=True)) for row in zip(*columns, strict=True)]


def annotation_event(seq: int = 9) -> pb.RunEvent:
    e = envelope(seq=seq, producer_id="cli-1")
    e.annotation.tags.add(key="reviewed", value="yes")
    e.annotation.note = "lr too high"
    e.annotation.archive = pb.ARCHIVE
    e.annotation.user, e.annotation.host = "ada", "ws-1"
    return e


def test_every_table_has_equal_length_columns_in_schema_order():
    batch = RowBatch()
    for e in [*sample_run(), annotation_event()]:
        batch.add(e)
    for table in tables.TABLES:
        columns = table_columns(batch, table)
        assert len(columns) == len(table.columns)
        assert len({len(c) for c in columns}) == 1, table.name
    assert [t.name for t, _ in batch.nonempty()] == [t.name for t in tables.TABLES]
    assert batch.events == 10
    assert batch.points == 20
    # runs+starts+status, params, tags, input, points, heartbeat, artifact, finished,
    # counts, annotation+its tag
    assert batch.rows == len(batch) == 3 + 2 + 1 + 1 + 20 + 1 + 1 + 1 + 4 + 2


def test_run_started_gives_a_runs_row_and_a_running_status():
    batch = RowBatch()
    assert batch.add(sample_run()[0]) == 3
    [run] = table_rows(batch, tables.RUNS)
    assert run == {
        "run_id": "run-1", "rank": 0, "experiment": "exp", "name": "my run", "world_size": 2,
        "local_rank": 0, "node": "node-1", "git_commit": "abc123", "git_branch": "main",
        "git_remote": "", "git_dirty": False, "in_git_repo": True, "python_version": "3.11.9",
        "os": "Linux", "command": "train.py --lr 0.1", "cpu_count": 16,
        "git_diff_sha256": "", "git_diff_uri": "", "cpu_model": "", "memory_bytes": 0,
        "packages": {}, "gpus": [], "gpu_memory_bytes": [], "gpu_driver": "", "cuda_version": "",
        "cwd": "", "script": "", "argv": [], "launcher": "", "nnodes": 0, "nproc_per_node": 0,
        "runstream_editable": False, "fork_run_id": "", "fork_step": 0,
        "producer_id": "prod-a", "seq": 1, "ts_ms": TS,
    }
    [start] = table_rows(batch, tables.RUN_STARTS)
    assert start == {"run_id": "run-1", "rank": 0, "world_size": 2, "local_rank": 0,
                     "node": "node-1", "restart": 0, "resume": False, "launcher": "",
                     "producer_id": "prod-a", "seq": 1, "ts_ms": TS}
    [status] = table_rows(batch, tables.RUN_STATUS)
    assert status["status"] == "RUNNING"
    assert status["error"] == ""
    assert (status["producer_id"], status["seq"]) == ("prod-a", 1)


def test_annotation_gives_an_annotations_row_and_its_tags_as_rank_0_tags():
    batch = RowBatch()
    assert batch.add(annotation_event()) == 2
    [row] = table_rows(batch, tables.ANNOTATIONS)
    assert row == {"run_id": "run-1", "experiment": "exp", "tag_keys": ["reviewed"],
                   "tag_values": ["yes"], "note": "lr too high", "archive": "ARCHIVE",
                   "user": "ada", "host": "ws-1", "producer_id": "cli-1", "seq": 9,
                   "ts_ms": TS}
    [tag] = table_rows(batch, tables.TAGS)
    assert (tag["key"], tag["value"], tag["rank"]) == ("reviewed", "yes", 0)


def test_annotation_without_who_adds_nothing():
    e = annotation_event()
    e.annotation.user = ""
    batch = RowBatch()
    with pytest.raises(ValidationError, match="user"):
        batch.add(e)
    assert len(batch) == 0


def test_run_finished_stores_the_status_name_and_error():
    e = envelope(seq=3)
    e.run_finished.status = pb.FAILED
    e.run_finished.error = "Traceback: boom"
    batch = RowBatch()
    batch.add(e)
    [row] = table_rows(batch, tables.RUN_STATUS)
    assert (row["status"], row["error"], row["experiment"]) == ("FAILED", "Traceback: boom", "exp")
    assert row_count(batch, tables.RUNS) == 0


def test_params_tags_artifact_input_and_heartbeat_rows():
    batch = RowBatch()
    events = sample_run()
    for e in events:
        batch.add(e)
    params = table_rows(batch, tables.PARAMS)
    assert [(p["key"], p["value"], p["type"]) for p in params] == [
        ("lr", "0.1", "FLOAT"), ("model.depth", "12", "INT")]
    assert all(p["seq"] == 2 and p["rank"] == 0 for p in params)
    [tag] = table_rows(batch, tables.TAGS)
    assert (tag["key"], tag["value"], tag["seq"]) == ("team", "vision", 3)
    [art] = table_rows(batch, tables.ARTIFACTS)
    assert (art["name"], art["uri"], art["size_bytes"], art["sha256"]) == (
        "model.npz", "file:///store/ab", 1234, "ab" * 32)
    [inp] = table_rows(batch, tables.INPUTS)
    assert (inp["name"], inp["uri"], inp["digest"], inp["role"]) == (
        "train", "s3://d/train", "d1", "train")
    [hb] = table_rows(batch, tables.HEARTBEATS)
    assert hb == {"run_id": "run-1", "rank": 0, "ts_ms": TS}


def test_metrics_one_row_per_point_with_identity():
    e = metrics_event(5, rank=1, seq=7, keys=("loss", "acc", "lr"))
    e.metrics.values[3] = math.nan
    batch = RowBatch()
    assert batch.add(e) == 5 + 3  # points, and one count row per key
    assert {(r["key"], r["points"], r["seq"]) for r in table_rows(batch, tables.METRIC_COUNTS)} \
        == {("loss", 2, 7), ("acc", 2, 7), ("lr", 1, 7)}
    rows = table_rows(batch, tables.METRICS)
    assert [r["key"] for r in rows] == ["loss", "acc", "lr", "loss", "acc"]
    assert [r["step"] for r in rows] == [0, 0, 0, 1, 1]
    assert [r["idx"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["ts_ms"] for r in rows] == [TS + i for i in range(5)]
    assert {(r["run_id"], r["rank"], r["producer_id"], r["seq"]) for r in rows} == {
        ("run-1", 1, "prod-a", 7)}
    assert math.isnan(float(rows[3]["value"]))  # type: ignore[arg-type]
    assert rows[4]["value"] == 2.0
    assert batch.points == 5


def test_metrics_with_a_single_key():
    batch = RowBatch()
    batch.add(metrics_event(3, keys=("loss",)))
    assert table_columns(batch, tables.METRICS)[1] == ["loss"] * 3


def test_metric_points_leave_as_one_dictionary_encoded_arrow_table():
    import pyarrow as pa

    batch = RowBatch()
    batch.add(metrics_event(4, run_id="run-a", seq=1))
    batch.add(metrics_event(2, run_id="run-b", seq=2, keys=("acc",)))
    [data] = [d for t, d in batch.nonempty() if t is tables.METRICS]
    assert isinstance(data, pa.Table)
    assert data.column_names == list(tables.METRICS.column_names)
    assert data.num_rows == 6
    for name in ("run_id", "key", "producer_id"):  # no Python string per point
        assert pa.types.is_dictionary(data.schema.field(name).type)
    assert data.column("run_id").to_pylist() == ["run-a"] * 4 + ["run-b"] * 2
    assert data.column("key").to_pylist() == ["loss", "acc", "loss", "acc", "acc", "acc"]
    assert data.column("idx").to_pylist() == [0, 1, 2, 3, 0, 1]
    assert str(data.schema.field("step").type) == "int64"


def test_a_key_listed_twice_in_the_key_table_is_counted_once():
    e = metrics_event(4, keys=("loss", "loss"))  # indices 0 and 1 both name "loss"
    batch = RowBatch()
    batch.add(e)
    counts = table_rows(batch, tables.METRIC_COUNTS)
    assert [(r["key"], r["points"]) for r in counts] == [("loss", 4)]
    assert table_columns(batch, tables.METRICS)[1] == ["loss"] * 4


def test_bad_key_index_adds_nothing():
    e = metrics_event(4)
    e.metrics.key_index[2] = 9
    batch = RowBatch()
    with pytest.raises(ValidationError):
        batch.add(e)
    assert batch.rows == 0
    assert all(len(c) == 0 for c in table_columns(batch, tables.METRICS))


def test_unknown_param_type_adds_nothing():
    e = envelope()
    e.params.params.add(key="a", value="1", type=pb.INT)
    e.params.params.add(key="b", value="2", type=77)
    batch = RowBatch()
    with pytest.raises(ValidationError):
        batch.add(e)
    assert row_count(batch, tables.PARAMS) == 0
