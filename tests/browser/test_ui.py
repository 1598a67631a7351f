"""The web UI in a real Chromium against a real `runstream serve` fed by the real SDK
(tests/browser/conftest.py): every view, asserted on the DOM and on the data each chart
was given (``window.__runstream``, query/web/TESTING.md), never on pixels; a screenshot
of each view goes to $RUNSTREAM_SCREENSHOTS (else the test's tmp dir)."""

from __future__ import annotations

import hashlib
import json
import math
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.browser.ui import attr_all, chart, goto, hooks, row_ids, settle, until
from tests.browser.world import (
    ARTIFACT_BYTES,
    DIVERGE_STEP,
    LONG_POINTS,
    SLOW_RANK,
    SWEEP,
    SWEEP_STEPS,
    TOKEN,
    WORLD_SIZE,
    World,
)

Shot = Callable[[Any, str], Path]
MAX_SENT = 10_000  # the most points of one series the API may send (max_points 2..10,000)


def api(world: World, path: str) -> Any:
    """GET an /api/ path as JSON, with the token (what the UI should have shown)."""
    req = urllib.request.Request(f"{world.url}{path}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def final_loss(run: dict[str, Any]) -> float:
    """The sweep job's last loss (data_job.sweep)."""
    return math.exp(-run["lr"] * (SWEEP_STEPS - 1)) + run["batch_size"] / 1e4


def lr_of(world: World) -> dict[str, float]:
    runs = [*world.sweep, *world.other]
    out = {r["run_id"]: float(r["lr"]) for r in runs}
    out[world.dist_run], out[world.artifact_run] = 0.1, 0.2
    return out


def show_column(page: Any, column: str) -> None:
    """Tick ``column`` in the column chooser (if not shown yet) and wait for its header."""
    header = page.locator(f"[data-testid=sort-header][data-sort-key='{column}']")
    if header.count():
        return
    page.click("[data-testid=column-chooser]")
    page.locator("[data-testid=column-panel]").wait_for()
    page.locator(f"[data-testid=column-option][data-column='{column}']").check()
    header.wait_for()
    settle(page)
    if page.locator("[data-testid=column-panel]").is_visible():
        page.click("[data-testid=column-chooser]")  # close it again


def apply_filter(page: Any, text: str) -> None:
    box = page.locator("[data-testid=filter-input]")
    box.fill(text)
    box.press("Enter")


# --- the runs table ---------------------------------------------------------------------------


def test_filter_shows_only_matching_runs(page: Any, world: World, shot: Shot) -> None:
    goto(page, world.url, "/runs", "runs")
    every = set(lr_of(world)) | {world.long_run, world.live_run}
    until(page, lambda: set(row_ids(page)), lambda ids: ids == every, "every run listed")
    apply_filter(page, "params.lr > 0.05")
    expected = {run_id for run_id, lr in lr_of(world).items() if lr > 0.05}
    until(page, lambda: set(row_ids(page)), lambda ids: ids == expected, "the matching runs")
    assert "filter=params.lr" in urllib.parse.unquote(page.url).replace("+", " ")
    shot(page, "runs-filtered")


def test_bad_filter_shows_the_error_and_its_position(page: Any, world: World,
                                                     shot: Shot) -> None:
    bad = "params.lr > 0.05 and foo = 1"
    goto(page, world.url, "/runs", "runs")
    apply_filter(page, bad)
    error = page.locator("[data-testid=filter-error]")
    error.wait_for()
    expected = api(world, "/api/runs?" + urllib.parse.urlencode({"filter": bad}))["error"]
    assert expected["code"] == "INVALID_ARGUMENT" and expected["position"] == bad.index("foo")
    assert error.get_attribute("data-position") == str(bad.index("foo"))
    assert expected["message"] in error.inner_text()
    assert page.inner_text("[data-testid=filter-echo]").strip() == bad
    assert page.inner_text("[data-testid=filter-error-mark]") == "f"
    shot(page, "runs-bad-filter")


def test_sort_by_metric_and_choose_param_column_kept_in_url(page: Any, world: World,
                                                            shot: Shot) -> None:
    goto(page, world.url, f"/runs?experiment={SWEEP}", "runs")
    sweep = {r["run_id"]: r for r in world.sweep}
    until(page, lambda: set(row_ids(page)), lambda ids: ids == set(sweep), "the sweep's runs")
    show_column(page, "metrics.loss")
    show_column(page, "params.batch_size")
    header = page.locator("[data-testid=sort-header][data-sort-key='metrics.loss']")
    header.click()
    by_loss = sorted(sweep, key=lambda r: final_loss(sweep[r]))
    until(page, lambda: row_ids(page), lambda ids: ids == by_loss[::-1], "loss descending")
    assert header.get_attribute("data-sort-dir") == "DESC"
    header.click()
    until(page, lambda: row_ids(page), lambda ids: ids == by_loss, "loss ascending")
    assert header.get_attribute("data-sort-dir") == "ASC"
    # The param column holds each run's batch size.
    for run_id, run in sweep.items():
        row = page.locator(f"[data-testid=runs-row][data-run-id='{run_id}']")
        assert str(run["batch_size"]) in row.inner_text().split(), row.inner_text()
    shot(page, "runs-sorted")

    # The URL holds the state: a reload, and the same link in a new page, give this view.
    state = urllib.parse.unquote(page.url.split("#", 1)[1]).replace("+", " ")
    assert "metrics.loss ASC" in state and "params.batch_size" in state, state
    url = page.url
    page.reload()
    settle(page, "runs")
    until(page, lambda: row_ids(page), lambda ids: ids == by_loss, "the same order reloaded")
    assert page.locator("[data-testid=sort-header][data-sort-key='metrics.loss']"
                        ).get_attribute("data-sort-dir") == "ASC"
    assert page.locator("[data-testid=sort-header][data-sort-key='params.batch_size']").count()
    assert page.url == url


# --- one run ---------------------------------------------------------------------------------


def test_run_metrics_tab_has_one_chart_per_key(page: Any, world: World, shot: Shot) -> None:
    run = world.sweep[1]
    goto(page, world.url, f"/runs?experiment={SWEEP}", "runs")
    page.locator(f"[data-testid=runs-row][data-run-id='{run['run_id']}'] a").first.click()
    settle(page, "run")
    assert page.get_attribute("[data-testid=run-header]", "data-run-id") == run["run_id"]
    assert page.get_attribute("[data-testid=run-status]", "data-status") == "FINISHED"
    assert page.get_attribute("[data-testid=tab-metrics]", "aria-selected") == "true"
    ids = set(attr_all(page, "[data-testid=chart]", "chartId"))
    assert ids == {"metric:loss", "metric:acc"}, ids
    for key in ("loss", "acc"):
        record = chart(page, f"metric:{key}")
        assert record is not None
        assert [(s["runId"], s["key"], s["points"], s["firstStep"], s["lastStep"])
                for s in record["series"]] == [(run["run_id"], key, SWEEP_STEPS, 0,
                                                SWEEP_STEPS - 1)]
    shot(page, "run-metrics")


def test_run_ranks_tab_marks_the_slow_rank(page: Any, world: World, shot: Shot) -> None:
    goto(page, world.url, f"/run/{world.dist_run}?tab=ranks", "run")
    page.locator("[data-testid=ranks-table]").wait_for()
    assert attr_all(page, "[data-testid=rank-row]", "rank") == [str(r) for r in
                                                               range(WORLD_SIZE)]
    suspects = page.eval_on_selector_all("[data-testid=rank-row][data-suspect='1']",
                                         "els => els.map(e => e.dataset.rank)")
    assert suspects == [str(SLOW_RANK)]
    assert page.inner_text("[data-testid=run-world-size]").strip().endswith(str(WORLD_SIZE))
    shot(page, "run-ranks")


def test_run_artifacts_tab_downloads_the_bytes(page: Any, world: World, shot: Shot) -> None:
    goto(page, world.url, f"/run/{world.artifact_run}?tab=artifacts", "run")
    row = page.locator("[data-testid=artifact-row][data-name='model.bin']")
    row.wait_for()
    link = row.locator("[data-testid=artifact-download]")
    href = link.get_attribute("href")
    assert href is not None and f"sha256={world.artifact_sha256}" in href, href
    with page.expect_download() as info:
        link.click()
    body = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(body).hexdigest() == world.artifact_sha256
    assert body == ARTIFACT_BYTES
    shot(page, "run-artifacts")


def test_run_code_inputs_and_reproduce_tabs(page: Any, world: World, shot: Shot) -> None:
    run_id = world.artifact_run
    goto(page, world.url, f"/run/{run_id}?tab=code", "run")
    page.locator("[data-testid=code-info]").wait_for()
    page.locator("[data-testid=env-info]").wait_for()
    assert "python" in page.inner_text("[data-testid=env-info]").lower()
    shot(page, "run-code")

    page.click("[data-testid=tab-inputs]")
    row = page.locator("[data-testid=input-row]")
    row.first.wait_for()
    digest = "sha256:" + hashlib.sha256(b"x,y\n1,2\n3,4\n").hexdigest()
    assert row.count() == 1
    assert "train.csv" in row.inner_text() and digest[:19] in row.inner_text()
    assert "tab=inputs" in page.url
    shot(page, "run-inputs")

    page.click("[data-testid=tab-reproduce]")
    text = page.locator("[data-testid=reproduce-text]")
    text.wait_for()
    until(page, text.inner_text, lambda t: t.strip() == api(
        world, f"/api/runs/{run_id}/reproduce")["text"].strip(), "the reproduce text")
    assert run_id in text.inner_text()
    shot(page, "run-reproduce")


# --- comparing runs --------------------------------------------------------------------------


def diff_rows(page: Any) -> list[tuple[str, str, str]]:
    """(section, key, differs) of the compare view's diff rows, in order."""
    return list(zip(attr_all(page, "[data-testid=diff-row]", "section"),
                    attr_all(page, "[data-testid=diff-row]", "key"),
                    attr_all(page, "[data-testid=diff-row]", "differs"), strict=True))


def test_compare_two_runs(page: Any, world: World, shot: Shot) -> None:
    a, b = world.sweep[0], world.sweep[2]
    goto(page, world.url, f"/runs?experiment={SWEEP}", "runs")
    for run in (a, b):
        page.locator(f"[data-testid=runs-row][data-run-id='{run['run_id']}'] "
                     "[data-testid=run-select]").check()
    assert page.inner_text("[data-testid=selected-count]").strip().startswith("2")
    page.click("[data-testid=compare-button]")
    settle(page, "compare")
    assert f"run={a['run_id']}" in page.url and f"run={b['run_id']}" in page.url
    rows = page.locator("[data-testid=diff-row]")
    rows.first.wait_for()
    differing = {k.removeprefix("params.") for s, k, d in diff_rows(page)
                 if d == "1" and s in ("param", "params")}
    assert differing >= {"lr", "batch_size"}, diff_rows(page)
    page.locator("[data-testid=show-equal]").check()
    until(page, lambda: [d for _, _, d in diff_rows(page)], lambda d: "0" in d,
          "the equal rows shown (tags.team, the code version are equal)")
    for section in {s for s, _, _ in diff_rows(page)}:
        flags = [d for s, _, d in diff_rows(page) if s == section]
        assert flags == sorted(flags, reverse=True), (section, flags)  # differing first
    record = chart(page, "compare")
    assert record is not None
    assert sorted(s["runId"] for s in record["series"]) == sorted([a["run_id"], b["run_id"]])
    assert all(s["points"] == SWEEP_STEPS for s in record["series"]), record["series"]
    shot(page, "compare")


# --- zooming a long series -------------------------------------------------------------------


def drag(page: Any, chart_id: str, start: float, end: float) -> None:
    """Drag across the plot area of a chart from ``start`` to ``end`` (fractions of its
    width), at half its height: uPlot's x-range selection."""
    box = page.locator(f"[data-chart-id='{chart_id}'] .u-over").bounding_box()
    assert box is not None, "the chart has no plot area"
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (start + end) / 2, y, steps=4)
    page.mouse.move(box["x"] + box["width"] * end, y, steps=4)
    page.mouse.up()


def test_zoom_long_series_refetches_real_points(page: Any, world: World, shot: Shot) -> None:
    sent: list[Any] = []
    page.on("response", lambda r: sent.append(r) if "/api/history" in r.url else None)
    goto(page, world.url, f"/run/{world.long_run}?tab=metrics", "run")
    cid = "metric:loss"
    first = chart(page, cid)
    assert first is not None and first["zoom"] is None
    (series,) = first["series"]
    assert series["downsampled"] and 2 <= series["points"] <= MAX_SENT, series
    assert (series["firstStep"], series["lastStep"]) == (0, LONG_POINTS - 1)
    shot(page, "run-long-series")
    record: dict[str, Any] | None = first
    for _ in range(5):  # narrow the range until it holds fewer steps than a request's max
        assert record is not None
        fetches = int(record["fetches"])

        def refetched(c: dict[str, Any] | None, n: int = fetches) -> bool:
            return c is not None and c["fetches"] > n and c["zoom"] is not None

        drag(page, cid, 0.40, 0.43)
        until(page, lambda: chart(page, cid), refetched, "a re-fetch of the zoomed range")
        settle(page)
        record = chart(page, cid)
        assert record is not None and record["zoom"] is not None
        assert record["maxPoints"] <= MAX_SENT
        lo, hi = record["zoom"]
        if hi - lo + 1 <= record["maxPoints"]:
            break
    else:
        raise AssertionError(f"five zooms never got below max_points: {record}")
    (series,) = record["series"]
    assert 0 < lo < hi < LONG_POINTS - 1
    assert not series["downsampled"], series
    # Every step of the range, each a real point (the job logged every step).
    assert series["points"] == hi - lo + 1, (series, lo, hi)
    assert (series["firstStep"], series["lastStep"]) == (lo, hi)
    zoomed = [r for r in sent if f"start_step={lo}" in r.url]
    assert zoomed, [r.url for r in sent]
    body = zoomed[-1].json()["series"][0]
    # Real points: every logged step once, each its own bucket, the values logged.
    assert body["steps"] == list(range(lo, hi + 1)), (body["steps"][:5], lo, hi)
    assert body["total_points"] == len(body["steps"])
    assert set(body.get("bucket_counts") or [1]) == {1}
    assert body["values"] == [1.0 / (1 + s / 1000) + (3.0 if s % 10_007 == 0 else 0.0)
                              for s in range(lo, hi + 1)]
    # No answer ever carried more than 10k points of one series.
    sizes = [len(s["steps"]) for r in sent for s in r.json()["series"]]
    assert sizes and max(sizes) <= MAX_SENT, sizes
    shot(page, "run-long-series-zoomed")


# --- following a live run --------------------------------------------------------------------


def test_follow_live_run_until_finished(page: Any, world: World, shot: Shot) -> None:
    assert world.live_proc.poll() is None, "the live job ended before the test"
    goto(page, world.url, f"/run/{world.live_run}?tab=metrics", "run")
    page.evaluate("window.__notReloaded = true")
    indicator = page.locator("[data-testid=live-indicator]")
    until(page, lambda: indicator.get_attribute("data-live"), lambda v: v == "1",
          "the live indicator on")
    assert page.get_attribute("[data-testid=run-status]", "data-status") == "RUNNING"
    start = chart(page, "metric:loss")
    assert start is not None
    before = start["series"][0]["points"]
    grown = until(page, lambda: chart(page, "metric:loss"),
                  lambda c: c is not None and c["series"][0]["points"] >= before + 3,
                  "new live points on the chart")
    assert grown is not None and grown["series"][0]["lastStep"] >= start["series"][0][
        "lastStep"] + 3
    assert grown["fetches"] == start["fetches"], "the points came by the stream, not a re-fetch"
    follow = hooks(page, "follow")
    assert follow["runId"] == world.live_run and follow["open"] and follow["events"] > 0
    shot(page, "run-live")

    world.live_stop.touch()
    assert world.live_proc.wait(timeout=30) == 0
    until(page, lambda: page.get_attribute("[data-testid=run-status]", "data-status"),
          lambda s: s == "FINISHED", "the status FINISHED", timeout_s=60)
    until(page, lambda: indicator.get_attribute("data-live"), lambda v: v == "0",
          "the live indicator off")
    assert page.evaluate("window.__notReloaded === true")
    stored = len(world.client.metric_history(world.live_run, "loss").steps)
    until(page, lambda: (chart(page, "metric:loss") or {"series": [{}]})["series"][0].get(
        "points"), lambda n: n == stored, f"all {stored} points on the chart")


# --- the distributed view and ingestion ------------------------------------------------------


def test_distributed_view_names_the_outlier_and_draws_lag(page: Any, world: World,
                                                          shot: Shot) -> None:
    goto(page, world.url, f"/run/{world.dist_run}/distributed?key=loss", "distributed")
    outlier = page.locator("[data-testid=envelope-outlier]")
    outlier.wait_for()
    assert outlier.get_attribute("data-rank") == str(SLOW_RANK)
    record = chart(page, "envelope")
    assert record is not None
    bands = [s for s in record["series"] if s.get("envelope")]
    own = [s for s in record["series"] if s.get("rank") == SLOW_RANK]
    assert bands and own, record["series"]
    departures = attr_all(page, "[data-testid=departure-row]", "rank")
    assert departures and set(departures) == {str(SLOW_RANK)}, departures
    envelope = api(world, f"/api/runs/{world.dist_run}/envelope?key=loss")
    assert min(d["step"] for d in envelope["departures"]) >= DIVERGE_STEP

    heatmap = page.locator("[data-testid=lag-heatmap]")
    heatmap.wait_for()
    assert heatmap.get_attribute("data-ranks") == str(WORLD_SIZE)
    drawn = hooks(page, "heatmap")
    assert drawn["ranks"] == list(range(WORLD_SIZE)) and drawn["steps"] >= 2, drawn
    assert int(heatmap.get_attribute("data-steps") or 0) == drawn["steps"]
    assert drawn["maxLagMs"] > 0
    suspects = page.eval_on_selector_all("[data-testid=rank-row][data-suspect='1']",
                                         "els => els.map(e => e.dataset.rank)")
    assert suspects == [str(SLOW_RANK)]
    shot(page, "distributed")


def test_ingest_view_lists_partitions(page: Any, world: World, shot: Shot) -> None:
    goto(page, world.url, "/ingest", "ingest")
    rows = page.locator("[data-testid=ingest-row]")
    rows.first.wait_for()
    partitions = api(world, "/api/ingest")["partitions"]
    assert partitions and rows.count() == len(partitions)
    assert set(attr_all(page, "[data-testid=ingest-row]", "topic")) == {
        str(p["topic"]) for p in partitions}
    shot(page, "ingest")


# --- the token -------------------------------------------------------------------------------


def test_login_box_then_runs(anonymous_page: Any, world: World, shot: Shot) -> None:
    page = anonymous_page
    page.goto(f"{world.url}/#/runs")
    form = page.locator("[data-testid=login-form]")
    form.wait_for()
    assert page.locator("[data-testid=runs-row]").count() == 0
    page.fill("[data-testid=login-token]", "not-the-token")
    page.click("[data-testid=login-submit]")
    page.locator("[data-testid=login-error]").wait_for()
    shot(page, "login")
    page.fill("[data-testid=login-token]", TOKEN)
    page.click("[data-testid=login-submit]")
    page.locator("[data-testid=runs-row]").first.wait_for()
    settle(page, "runs")
    assert not form.is_visible()
    assert set(row_ids(page)) >= {r["run_id"] for r in world.sweep}
