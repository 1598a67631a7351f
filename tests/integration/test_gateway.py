"""The web UI's JSON/SSE gateway (runstream.query.gateway), over real HTTP on loopback: a
real in-process query server (start_server, ports 0) over the session's embedded
ClickHouse, data written as the consumer writes it, and one real `runstream serve`."""

from __future__ import annotations

import hashlib
import json
import math
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.proto import tables
from runstream.query import gateway
from runstream.query.config import QueryConfig
from runstream.query.server import QueryServer, start_server
from tests.factories import (
    T0,
    insert,
    points,
    seed_full_run,
    seed_runs,
    set_status,
    start_rank,
)
from tests.helpers import free_port, local_store_env, serving, wait_for

TOKEN = "s3cret-token"


def _config(chdb_dsn: str, ch_database: str, **kw: Any) -> QueryConfig:
    base: dict[str, Any] = {"addr": "127.0.0.1:0", "clickhouse_dsn": chdb_dsn,
                            "database": ch_database, "ui": True, "ui_addr": "127.0.0.1:0",
                            "grace_s": 1.0, "max_workers": 4}
    base.update(kw)
    return QueryConfig(**base)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def ui(ch: Any, chdb_dsn: str, ch_database: str, store: Path) -> Iterator[QueryServer]:
    """A query server with the web UI, no token, the artifact store ``store``."""
    with start_server(_config(chdb_dsn, ch_database, artifacts_dir=str(store))) as running:
        yield running


@pytest.fixture
def guarded(ch: Any, chdb_dsn: str, ch_database: str) -> Iterator[QueryServer]:
    with start_server(_config(chdb_dsn, ch_database, token=TOKEN)) as running:
        yield running


def _open(url: str, *, headers: dict[str, str] | None = None, data: bytes | None = None,
          context: ssl.SSLContext | None = None, timeout: float = 60) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get(server: QueryServer, path: str, **kw: Any) -> tuple[int, Any]:
    """(status, parsed JSON) of GET ``path``."""
    status, headers, body = _open(f"http://{server.ui_address}{path}", **kw)
    assert headers["Content-Type"].startswith("application/json"), (status, body[:200])
    return status, json.loads(body)


def ok(server: QueryServer, path: str, **kw: Any) -> Any:
    status, body = get(server, path, **kw)
    assert status == 200, (path, body)
    return body


def test_runs_page_filters_and_a_bad_filter_is_400_with_its_position(ui: QueryServer,
                                                                     ch: Any) -> None:
    seed_runs(ch)
    page = ok(ui, "/api/runs?experiment=exp&filter=params.batch%20%3D%2064"
                  "&order_by=params.lr%20DESC&page_size=3")
    assert [r["run_id"] for r in page["runs"]] == ["r08", "r06", "r04"]
    assert page["next_page_token"]
    assert page["runs"][0]["experiment"] == "exp" and page["runs"][0]["columns"] == {}
    rest = ok(ui, "/api/runs?experiment=exp&filter=params.batch%20%3D%2064&order_by="
                  f"params.lr%20DESC&page_size=3&page_token={page['next_page_token']}")
    assert [r["run_id"] for r in rest["runs"]] == ["r02", "r00"]
    assert rest["next_page_token"] == ""
    both = ok(ui, "/api/runs?experiment=exp&experiment=other&page_size=1000")
    assert len(both["runs"]) == 12

    status, body = get(ui, "/api/runs?filter=params.lr%20%3E%3E%201")
    assert status == 400
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert isinstance(body["error"]["position"], int) and body["error"]["position"] >= 10
    assert "Traceback" not in body["error"]["message"]
    status, body = get(ui, "/api/runs?page_size=x")
    assert status == 400 and "position" not in body["error"]


def test_runs_page_columns(ui: QueryServer, ch: Any) -> None:
    seed_runs(ch, n=3)
    page = ok(ui, "/api/runs?column=params.lr&column=metrics.loss&column=tags.model"
                  "&column=params.absent&order_by=params.lr")
    by_id = {r["run_id"]: r["columns"] for r in page["runs"]}
    assert by_id["r00"] == {"params.lr": "0.001", "metrics.loss": 0.0, "tags.model": "gpt2"}
    assert by_id["r01"]["metrics.loss"] == 1.0  # the latest loss: step 10 -> 10 - 10 + 1


def test_a_run_its_metrics_reproduce_text_and_not_found(ui: QueryServer, ch: Any) -> None:
    seed_full_run(ch)
    run = ok(ui, "/api/runs/run-full")
    assert run["info"]["run_id"] == "run-full" and run["info"]["status"] == "FINISHED"
    assert [p["key"] for p in run["params"]] == ["batch", "lr"]
    assert run["artifacts"][0]["name"] == "model.npz"
    assert [r["rank"] for r in run["ranks"]] == [0, 1, 2]
    every = ok(ui, "/api/runs/run-full?all_attempts=1")
    assert every["attempts"] and every["info"] == run["info"]
    metrics = ok(ui, "/api/runs/run-full/metrics")["metrics"]
    assert {m["key"] for m in metrics} == {"acc", "loss"}
    text = ok(ui, "/api/runs/run-full/reproduce")["text"]
    assert text.startswith("# Reproduce run run-full") and "git checkout abc0" in text
    status, body = get(ui, "/api/runs/nope")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND" and "nope" in body["error"][
        "message"]
    status, body = get(ui, "/api/no-such-endpoint")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert ok(ui, "/api/experiments")["experiments"][0]["experiment"] == "exp"
    assert ok(ui, "/api/ingest") == {"partitions": []}
    health = ok(ui, "/api/runs/run-full/ranks")
    assert [r["rank"] for r in health["ranks"]] == [0, 1, 2]


def test_history_is_columnar_with_nan_as_a_string(ui: QueryServer, ch: Any) -> None:
    seed_full_run(ch)
    insert(ch, tables.METRICS, [
        {"run_id": "run-full", "key": "grad", "rank": 0, "step": s,
         "value": math.nan if s == 2 else (math.inf if s == 3 else s * 0.5),
         "ts_ms": T0 + s, "producer_id": "p0", "seq": 70, "idx": s} for s in range(5)])
    insert(ch, tables.METRICS, [
        {"run_id": "run-full", "key": "grad", "rank": 0, "step": 5, "value": -math.inf,
         "ts_ms": T0 + 5, "producer_id": "p0", "seq": 71, "idx": 0}])
    body = ok(ui, "/api/history?run=run-full&key=grad&key=loss&rank=0")
    grad, loss = body["series"]
    assert (grad["run_id"], grad["key"], loss["key"]) == ("run-full", "grad", "loss")
    # A downsampled history leaves NaN points out (the service's rule); infinities stay.
    assert grad["steps"] == [0, 1, 3, 4, 5]
    assert grad["values"] == [0.0, 0.5, "Infinity", 2.0, "-Infinity"]
    assert grad["max_values"][2] == "Infinity" and grad["min_values"][4] == "-Infinity"
    assert grad["ranks"] == [0] * 5 and len(grad["ts_ms"]) == 5
    assert loss["steps"] == list(range(10))
    window = ok(ui, "/api/history?run=run-full&key=loss&rank=1&start_step=3&end_step=5")
    assert window["series"][0]["steps"] == [3, 4, 5]
    mean = ok(ui, "/api/history?run=run-full&key=loss&aggregate=mean&max_points=4")
    assert mean["series"][0]["downsampled"] and len(mean["series"][0]["steps"]) <= 4
    status, err = get(ui, f"/api/history?run=run-full&key=loss&start_step={2**53 + 1}")
    assert status == 400 and "2^53" in err["error"]["message"]
    status, err = get(ui, "/api/history?run=run-full&key=loss&max_points=1")
    assert status == 400


def test_compare(ui: QueryServer, ch: Any) -> None:
    seed_runs(ch, n=3)
    c = ok(ui, "/api/compare?run=r00&run=r01&key=loss")
    assert [r["run_id"] for r in c["runs"]] == ["r00", "r01"]
    assert [m["key"] for m in c["metrics"]] == ["loss"]
    assert {f["key"] for f in c["fields"]} >= {"lr", "batch"}
    status, body = get(ui, "/api/compare?run=r00")
    assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT"


def test_keys_lag_and_envelope(ui: QueryServer, ch: Any) -> None:
    seed_runs(ch, n=3)
    keys = ok(ui, "/api/keys?experiment=exp")
    assert (keys["params"], keys["metrics"], keys["tags"]) == (
        ["batch", "lr"], ["loss", "val_acc"], ["model"])
    seed_full_run(ch)
    envelope = ok(ui, "/api/runs/run-full/envelope?key=loss&max_points=100")
    assert envelope["run_id"] == "run-full" and envelope["key"] == "loss"
    assert envelope["ranks"] == [0, 1] and envelope["steps"][:3] == [0, 1, 2]
    assert len(envelope["mean"]) == len(envelope["steps"]) == len(envelope["count"])
    insert(ch, tables.METRICS, points("run-full", "loss", 2, range(0, 4), ts0=T0 + 100))
    lag = ok(ui, "/api/runs/run-full/lag?key=loss&max_steps=10")
    assert lag["key"] == "loss" and lag["ranks"] == [0, 1, 2]
    assert lag["steps"][:3] == [0, 2, 4]
    # Rank 2 is 100 ms behind the median while it logs, and logs nothing from step 4 on.
    assert lag["lag_ms"][2][:3] == [100.0, 100.0, "NaN"]
    assert lag["lag_ms"][0][:3] == [0.0, 0.0, 0.0]
    status, _ = get(ui, "/api/runs/run-full/lag?key=loss&max_steps=1")
    assert status == 400


def _events(url: str, *, until: str = "end", headers: dict[str, str] | None = None,
            timeout: float = 60) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE stream, read until the event ``until``; a comment
    counts as the event ":"."""
    out: list[tuple[str, str]] = []
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event = ""
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                out.append((":", line))
                if until == ":":
                    return out
            elif line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                out.append((event, line[len("data: "):]))
                if event == until:
                    return out
    raise AssertionError(f"the stream ended without {until}: {out}")


def test_follow_streams_points_and_statuses_then_end_for_a_finished_run(
        ui: QueryServer, ch: Any) -> None:
    seed_full_run(ch)
    set_status(ch, "run-full", 2, "FINISHED", T0 + 950, seq=70)  # every rank has ended
    events = _events(f"http://{ui.ui_address}/api/follow/run-full?key=loss&from_step=0")
    kinds = [e for e, _ in events]
    assert kinds[-1] == "end" and "points" in kinds and "status" in kinds
    points = [json.loads(d) for e, d in events if e == "points"]
    steps = sorted((r, s) for p in points for r, s in zip(p["ranks"], p["steps"], strict=True))
    assert steps == sorted([(0, s) for s in range(10)] + [(1, s) for s in range(12)])
    assert all(p["keys"] in ([], ["loss"]) for p in points)
    statuses = {json.loads(d)["rank"]: json.loads(d)["status"] for e, d in events
                if e == "status"}
    assert statuses == {0: "FINISHED", 1: "FAILED", 2: "FINISHED"}
    status, body = get(ui, "/api/follow/nope")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


def test_follow_keeps_alive_is_limited_and_frees_its_slot_on_disconnect(
        ch: Any, chdb_dsn: str, ch_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "KEEPALIVE_S", 0.3)
    start_rank(ch, "live", 0, 1, T0)
    # max_workers 2: one FollowRun stream at a time.
    with start_server(_config(chdb_dsn, ch_database, max_workers=2)) as running:
        url = f"http://{running.ui_address}/api/follow/live"
        request = urllib.request.Request(url)
        first = urllib.request.urlopen(request, timeout=60)
        try:
            assert first.headers["Content-Type"].startswith("text/event-stream")
            lines = []
            for raw in first:
                lines.append(raw.decode().strip())
                if lines[-1] == ": keep-alive":
                    break
            assert "event: status" in lines
            status, body = get(running, "/api/follow/live")
            assert status == 503 and body["error"]["code"] == "UNAVAILABLE"
        finally:
            first.close()

        # The closed stream's slot comes back (at its next poll).
        def second_opens() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    return r.status == 200
            except urllib.error.HTTPError as e:
                assert e.code == 503
                return False

        wait_for(second_opens, timeout_s=60, what="the follower slot freed")
        set_status(ch, "live", 0, "FINISHED", T0 + 10, seq=9)
        assert _events(url)[-1][0] == "end"


def test_auth_by_header_or_login_cookie(guarded: QueryServer, ch: Any) -> None:
    seed_runs(ch, n=2)
    assert ok(guarded, "/api/health") == {"ok": True, "auth": True}
    status, body = get(guarded, "/api/runs")
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    status, _ = get(guarded, "/api/runs", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        assert len(ok(guarded, "/api/runs", headers={"Authorization": header})["runs"]) == 2
    status, _ = get(guarded, "/api/follow/r00")
    assert status == 401

    base = f"http://{guarded.ui_address}"
    status, _, _ = _open(f"{base}/api/login", data=json.dumps({"token": "wrong"}).encode(),
                         headers={"Content-Type": "application/json"})
    assert status == 401
    status, headers, _ = _open(f"{base}/api/login", data=json.dumps({"token": TOKEN}).encode(),
                               headers={"Content-Type": "application/json"})
    assert status == 204
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"runstream_token={TOKEN}")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    pair = cookie.split(";", 1)[0]
    assert len(ok(guarded, "/api/runs", headers={"Cookie": pair})["runs"]) == 2
    status, _ = get(guarded, "/api/runs", headers={"Cookie": "runstream_token=wrong"})
    assert status == 401


def test_artifact_download_verifies_the_stored_file(ui: QueryServer, ch: Any,
                                                    store: Path) -> None:
    content = b"weights \x00\x01" * 100
    sha = hashlib.sha256(content).hexdigest()
    start_rank(ch, "art", 0, 1, T0)
    rows = [{"run_id": "art", "rank": 0, "name": name, "uri": f"file:///elsewhere/{s}",
             "size_bytes": len(content), "sha256": s, "producer_id": "p0", "seq": 5,
             "ts_ms": T0} for name, s in (("out/model.bin", sha), ("gone.bin", "cd" * 32))]
    insert(ch, tables.ARTIFACTS, rows)
    base = f"http://{ui.ui_address}/api/runs/art/artifacts"
    status, _, _ = _open(f"{base}/out/model.bin")
    assert status == 404  # not in the store yet
    blob = store / "sha256" / sha[:2] / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    status, headers, body = _open(f"{base}/out/model.bin?sha256={sha[:8]}")
    assert status == 200 and body == content
    assert headers["Content-Disposition"].startswith("attachment")
    assert "model.bin" in headers["Content-Disposition"]
    for missing in ("gone.bin", "no-such.bin"):
        status, _, body = _open(f"{base}/{missing}")
        assert status == 404 and json.loads(body)["error"]["code"] == "NOT_FOUND"
    blob.write_bytes(content[:-1] + b"X")  # damaged: same size, other digest
    status, _, _ = _open(f"{base}/out/model.bin")
    assert status == 404


def test_a_dirty_runs_stored_diff_is_served_as_text(ui: QueryServer, ch: Any,
                                                   store: Path) -> None:
    diff = b"diff --git a/train.py b/train.py\n-lr = 0.1\n+lr = 0.2\n"
    sha = hashlib.sha256(diff).hexdigest()
    insert(ch, tables.RUNS, [{
        "run_id": "dirty", "rank": 0, "experiment": "exp", "world_size": 1, "git_dirty": True,
        "in_git_repo": True, "git_diff_sha256": sha, "producer_id": "p0", "seq": 1, "ts_ms": T0}])
    start_rank(ch, "clean", 0, 1, T0)  # git_dirty, but no diff recorded
    url = f"http://{ui.ui_address}/api/runs/dirty/diff"
    status, _, body = _open(url)
    assert status == 404 and "not in the artifact store" in json.loads(body)["error"]["message"]
    blob = store / "sha256" / sha[:2] / sha
    blob.parent.mkdir(parents=True)
    blob.write_bytes(diff)
    status, headers, body = _open(url)
    assert status == 200 and body == diff and headers["Content-Type"].startswith("text/plain")
    status, _, _ = _open(f"http://{ui.ui_address}/api/runs/clean/diff")
    assert status == 404
    blob.write_bytes(diff.replace(b"0.2", b"0.3"))  # damaged: another digest
    status, _, _ = _open(url)
    assert status == 404


def _serve_static(directory: Path) -> gateway.UiServer:
    service: Any = None  # the static routes never reach the service
    server = gateway.UiServer(gateway.Gateway(service, static_dir=directory).app(),
                              "127.0.0.1:0", grace_s=1.0)
    server.start()
    return server


def test_static_index_and_assets_with_cache_headers(tmp_path: Path) -> None:
    bundle = tmp_path / "static"
    bundle.mkdir()
    (bundle / "index.html").write_text("<!doctype html><title>Runstream</title>")
    (bundle / "app.js").write_text("console.log('runstream')")
    server = _serve_static(bundle)
    try:
        base = f"http://{server.address}"
        status, headers, body = _open(f"{base}/")
        assert status == 200 and b"<title>Runstream" in body
        assert headers["Content-Type"].startswith("text/html")
        assert headers["Cache-Control"] == "no-cache"
        status, headers, body = _open(f"{base}/assets/app.js")
        assert status == 200 and body == b"console.log('runstream')"
        etag = headers["ETag"]
        status, _, _ = _open(f"{base}/assets/app.js", headers={"If-None-Match": etag})
        assert status == 304
        status, _, _ = _open(f"{base}/assets/../../etc/passwd")
        assert status == 404
        status, _, _ = _open(f"{base}/assets/missing.css")
        assert status == 404
    finally:
        server.stop()


def test_a_missing_bundle_is_a_clear_503_page(tmp_path: Path) -> None:
    server = _serve_static(tmp_path / "not-built")
    try:
        for path in ("/", "/assets/app.js"):
            status, headers, body = _open(f"http://{server.address}{path}")
            assert status == 503 and headers["Content-Type"].startswith("text/plain")
            assert b"web UI's files are missing" in body and b"build.mjs" in body
    finally:
        server.stop()


def test_the_package_serves_its_index_or_says_the_bundle_is_missing(ui: QueryServer) -> None:
    status, headers, body = _open(f"http://{ui.ui_address}/")
    if (gateway.STATIC_DIR / "index.html").is_file():
        assert status == 200 and headers["Content-Type"].startswith("text/html")
    else:
        assert status == 503 and b"missing" in body


def test_no_ui_flag_turns_the_ui_off_and_a_busy_port_is_unavailable(
        ch: Any, chdb_dsn: str, ch_database: str) -> None:
    from runstream.cli import services
    from runstream.cli.main import build_parser
    from runstream.proto.errors import UnavailableError

    args = build_parser().parse_args(["query-server", "--no-ui", "--addr", "127.0.0.1:0",
                                      "--clickhouse", chdb_dsn, "--database", ch_database])
    config = services._query_config(args)
    assert not config.ui
    with start_server(config) as running:
        assert running.ui is None and running.ui_port == 0 and running.ui_address == ""
    port = free_port()
    args = build_parser().parse_args(["query-server", "--ui-addr", f"127.0.0.1:{port}",
                                      "--addr", "127.0.0.1:0", "--clickhouse", chdb_dsn,
                                      "--database", ch_database])
    config = services._query_config(args)
    assert config.ui and config.ui_addr == f"127.0.0.1:{port}"
    with start_server(config) as running:
        assert running.ui_port == port
        assert ok(running, "/api/health") == {"ok": True, "auth": False}
        with pytest.raises(UnavailableError, match=f"127.0.0.1:{port}"):
            start_server(config)  # the UI's port is taken
    assert not [t for t in threading.enumerate() if t.name == "runstream-query-ui"]


def test_https_with_the_grpc_certificate(ch: Any, chdb_dsn: str, ch_database: str,
                                         tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = _config(chdb_dsn, ch_database, tls_cert=str(cert), tls_key=str(key))
    with start_server(config) as running:
        assert running.ui_url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        status, _, body = _open(f"https://{running.ui_address}/api/health", context=context)
        assert status == 200 and json.loads(body)["ok"] is True
        with pytest.raises(OSError):  # plain HTTP to the TLS port: the connection drops
            _open(f"http://{running.ui_address}/api/health", timeout=10)


def test_runstream_serve_answers_on_its_ui_address(tmp_path: Path) -> None:
    port = free_port()
    env = local_store_env(tmp_path, RUNSTREAM_UI_ADDR=f"127.0.0.1:{port}")
    log = tmp_path / "serve.log"
    with serving(env, log=log):
        status, _, body = _open(f"http://127.0.0.1:{port}/api/health")
        assert status == 200 and json.loads(body) == {"ok": True, "auth": False}
        assert json.loads(_open(f"http://127.0.0.1:{port}/api/runs")[2]) == {
            "runs": [], "next_page_token": ""}
    assert f"web UI on http://127.0.0.1:{port}" in log.read_text()


def test_stop_ends_open_streams_within_the_grace_period(ch: Any, chdb_dsn: str,
                                                        ch_database: str) -> None:
    start_rank(ch, "live", 0, 1, T0)
    running = start_server(_config(chdb_dsn, ch_database, grace_s=2.0))
    try:
        stream = urllib.request.urlopen(f"http://{running.ui_address}/api/follow/live",
                                        timeout=60)
        seen = []
        for raw in stream:
            seen.append(raw.decode().strip())
            if seen[-1] == "event: status":
                break
        stopper = threading.Thread(target=running.stop, name="test-stop")
        t0 = time.monotonic()
        stopper.start()
        rest = [raw.decode().strip() for raw in stream]  # until the server closes it
        stopper.join(30)
        assert not stopper.is_alive() and time.monotonic() - t0 < 2.0 + 5.0
        assert "event: end" in rest
        stream.close()
    finally:
        running.stop()
    assert not [t for t in threading.enumerate() if t.name == "runstream-query-ui"]
