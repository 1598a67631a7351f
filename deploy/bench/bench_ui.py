"""The web UI in headless Chromium (standalone; ``make bench`` runs it, ``BENCH=ui``): medians.

One real ``runstream serve`` (gRPC + the web UI's gateway) on an embedded ClickHouse
(chdb, temp dir, removed at the end) and one ``mlflow server`` (sqlite, same temp dir),
both driven by Debian's Chromium (/usr/bin/chromium) through Playwright.

Data: 100,000 runs (10 params, 5 metrics x 2 steps), a 1M-point series, 10 runs of a
50,000-point series to compare, and the side-by-side data both servers get: 5,000 runs
and a 100,000-point series. Runstream's store is written the fastest real way: rows
generated inside ClickHouse (``INSERT ... SELECT FROM numbers()``) straight into
Runstream's own tables (``runstream.proto.tables``) and their materialized views, in a
child process (one chdb path opens in one process, and serve needs it afterwards), not
through the SDK and the consumer. MLflow's runs go in through ``MlflowClient`` on the
same sqlite file its server reads. The live row alone goes through the SDK: a process
logging ~1,000 points/s into the spool, ingested by serve as in production.

Every time is measured in the page: from navigation (``performance.now()`` from 0) or
from the user's event (click, Enter, the end of a drag) to the animation frame after the
view's data is on screen (the DOM hooks of query/web/TESTING.md; for MLflow the first
grid row with a run name, the plot's drawn line). Each row has its same-run baseline:
the view's own /api requests fetched without a browser (what the page adds is the
difference), MLflow's same page (ratio MLflow / Runstream), or for the live point the
gRPC FollowRun stream of the same serve.

Environment: BENCH_UI_REPEAT (5 repetitions after a warm-up), BENCH_UI_RUNS (100000),
BENCH_UI_POINTS (1000000), BENCH_UI_MLFLOW=0 to leave MLflow out.
"""

# ruff: noqa: S608
# (SQL here is built from constants and generated names only.)
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
REPEAT = int(os.environ.get("BENCH_UI_REPEAT", "5"))
RUNS = int(os.environ.get("BENCH_UI_RUNS", "100000"))
POINTS = int(os.environ.get("BENCH_UI_POINTS", "1000000"))
WITH_MLFLOW = os.environ.get("BENCH_UI_MLFLOW", "1") != "0"
SIDE_RUNS, SIDE_POINTS, SIDE_EXPERIMENT = 5_000, 100_000, "bench5k"
COMPARE_RUNS, COMPARE_POINTS = 10, 50_000
LIVE_RATE_HZ, LIVE_S = 1_000, 8.0
FILTER = "params.p1 > 0.5 and metrics.m0 < 1.5"  # excludes the top m0 run: rows change
DATABASE = "runstream"

# In every page: once the condition `window.__benchCond` holds, the time of the next
# animation frame (the frame that painted it has been drawn) goes to `window.__benchT`.
WATCH = """
window.__benchT = 0;
window.__benchStart = 0;
window.__benchWatch = () => {
  const loop = () => requestAnimationFrame(() => {
    let ok = false;
    try { ok = !!(window.__benchCond && window.__benchCond()); } catch (e) { ok = false; }
    if (ok) { requestAnimationFrame(() => { window.__benchT = performance.now(); }); }
    else { loop(); }
  });
  loop();
};
window.__benchArm = (event) => {
  window.__benchT = 0;
  document.addEventListener(event, () => {
    window.__benchStart = performance.now();
    window.__benchWatch();
  }, {capture: true, once: true});
};
"""
SETTLED = ("window.__runstream && window.__runstream.ready && document.querySelector("
           "'[data-testid=view]') && document.querySelector('[data-testid=view]')"
           ".dataset.loading === '0'")


# --- data --------------------------------------------------------------------------------


def fill_runstream(home: Path) -> None:
    """(Child process.) Runstream's tables in chdb://home/chdb, filled by ClickHouse."""
    import clickhouse_connect
    from bench_growth import fill_runs_sql, fill_series_sql, make_db  # type: ignore[import-not-found]

    from runstream.proto import tables

    ch = clickhouse_connect.get_client(dsn=f"chdb://{home / 'chdb'}")
    db = DATABASE
    ch.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    make_db(ch, db)
    fill_runs_sql(ch, db, RUNS, "big", "big")
    fill_runs_sql(ch, db, SIDE_RUNS, SIDE_EXPERIMENT, "side")
    fill_runs_sql(ch, db, COMPARE_RUNS, "cmp", "cmp", near=True)  # ids cmp000000...
    for i in range(COMPARE_RUNS):
        ch.command(f"INSERT INTO `{db}`.metrics (run_id, key, rank, step, value, ts_ms,"
                   f" producer_id, seq, idx) SELECT 'cmp{i:06d}', 'loss', 0, number,"
                   f" 1 / (1 + number / 1000) * (1 + {i} / 10) + (number % 17) / 100,"
                   f" 1700000000000 + number, 'p', 9, number FROM numbers({COMPARE_POINTS})")
    fill_series_sql(ch, db, "long1m", 1, POINTS)
    fill_series_sql(ch, db, "side-long", 1, SIDE_POINTS)
    for table in ("metrics", "metric_summaries", tables.PARAMS.name):
        ch.command(f"OPTIMIZE TABLE `{db}`.{table} FINAL")


def fill_mlflow(home: Path) -> tuple[str, str, str]:
    """The side-by-side data in MLflow's sqlite store (bench_query.fill_mlflow: the same
    values). Returns (runs experiment id, series experiment id, series run id)."""
    import logging

    from bench_query import fill_mlflow as fill  # type: ignore[import-not-found]
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ml = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment_id, series_run = fill(ml)
    return experiment_id, ml.get_run(series_run).info.experiment_id, series_run


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (http to loopback)
            return bool(r.status == 200)
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_ui: timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process in a session of its own, stopped (its group) at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def runstream_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({
        "RUNSTREAM_HOME": str(home / "home"), "RUNSTREAM_CLICKHOUSE": f"chdb://{home / 'chdb'}",
        "RUNSTREAM_CLICKHOUSE_DATABASE": DATABASE, "RUNSTREAM_SPOOL_DIR": str(home / "spool"),
        "RUNSTREAM_ARTIFACTS": str(home / "artifacts"),
        "RUNSTREAM_QUERY_ADDR": f"127.0.0.1:{free_port()}",
        "RUNSTREAM_UI_ADDR": f"127.0.0.1:{free_port()}", "RUNSTREAM_SYSTEM_METRICS_S": "0",
    })
    return env


# --- measuring in the page ----------------------------------------------------------------


class Table:
    """Rows of (measurement, value, baseline, ratio)."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, name: str, value: str, baseline: str = "", ratio: str = "") -> None:
        self.rows.append([name, value, baseline, ratio])
        print("  " + " | ".join(c for c in (name, value, baseline, ratio) if c), flush=True)

    def render(self) -> str:
        header = [f"measurement (median of {REPEAT})", "value", "same-run baseline",
                  "ratio"]
        widths = [max(len(r[i]) for r in (header, *self.rows)) for i in range(4)]

        def line(r: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                          *(line(r) for r in self.rows)])


def ms(x: float) -> str:
    return f"{x:,.0f} ms" if x >= 10 else f"{x:,.1f} ms"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


class Browser:
    """One Chromium; ``load`` measures a navigation, ``action`` an interaction."""

    def __init__(self, pw: Any) -> None:
        self.browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(120_000)
        self.context.add_init_script(WATCH)

    def page(self) -> Any:
        return self.context.new_page()

    def load(self, url: str, cond: str, requests: list[str] | None = None,
             keep: bool = False) -> tuple[float, Any]:
        """Milliseconds from navigation to the frame after ``cond`` (JS) first holds in a
        fresh page; the /api/ URLs it requested are appended to ``requests``."""
        page = self.page()
        if requests is not None:
            page.on("request", lambda r: requests.append(r.url) if "/api/" in r.url else None)
        page.add_init_script(f"window.__benchCond = () => ({cond}); window.__benchWatch();")
        page.goto(url)
        page.wait_for_function("window.__benchT > 0", polling=50)
        t = float(page.evaluate("window.__benchT"))
        if not keep:
            page.close()
        return t, page

    @staticmethod
    def action(page: Any, event: str, cond: str, act: Callable[[], None]) -> float:
        """Milliseconds from ``event`` (the user's, caught in the page) to the frame after
        ``cond`` holds."""
        page.evaluate(f"window.__benchCond = () => ({cond})")
        page.evaluate(f"window.__benchArm({json.dumps(event)})")
        act()
        page.wait_for_function("window.__benchT > 0", polling=50)
        return float(page.evaluate("window.__benchT - window.__benchStart"))

    def close(self) -> None:
        self.context.close()
        self.browser.close()


def api_ms(urls: list[str]) -> float:
    """The view's /api/ requests fetched one after the other without a browser (SSE
    streams left out), milliseconds."""
    t = time.perf_counter()
    for url in urls:
        if "/api/follow/" in url:
            continue
        with urllib.request.urlopen(url, timeout=120) as r:  # noqa: S310 (http to loopback)
            r.read()
    return (time.perf_counter() - t) * 1000


def repeat_load(b: Browser, url: str, cond: str) -> tuple[float, float]:
    """(median page time, median time of its API requests alone), after a warm-up."""
    requests: list[str] = []
    b.load(url, cond, requests)  # warm-up: the bundle cached, ClickHouse's caches warm
    pages = [b.load(url, cond)[0] for _ in range(REPEAT)]
    apis = [api_ms(requests) for _ in range(REPEAT)]
    return median(pages), median(apis)


def drag(page: Any, chart_id: str, start: float, end: float) -> None:
    box = page.locator(f"[data-chart-id='{chart_id}'] .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * (start + end) / 2, y, steps=3)
    page.mouse.move(box["x"] + box["width"] * end, y, steps=3)
    page.mouse.up()


# --- the measurements ---------------------------------------------------------------------


def bench_runs_table(b: Browser, base: str, t: Table) -> None:
    url = f"{base}/#/runs?experiment=big&column=metrics.m0&column=params.p1"
    first_row = "!!document.querySelector('[data-testid=runs-row]')"
    page_ms, api = repeat_load(b, url, first_row)
    t.add(f"runs table, {RUNS:,} runs: navigation -> first rows painted", ms(page_ms),
          f"its /api requests alone {ms(api)}")
    sorts, filters, sort_api, filter_api = [], [], [], []
    for i in range(REPEAT + 1):
        requests: list[str] = []
        _, page = b.load(url, first_row + " && " + SETTLED, keep=True)
        page.on("request", lambda r, rq=requests: rq.append(r.url) if "/api/runs" in r.url
                else None)
        before = page.get_attribute("[data-testid=runs-row][data-index='0']", "data-run-id")
        header = "[data-testid=sort-header][data-sort-key='metrics.m0']"
        sorted_cond = (f"document.querySelector(\"{header}\").dataset.sortDir === 'DESC' && "
                       f"document.querySelector(\"[data-testid=runs-row][data-index='0']\")"
                       f".dataset.runId !== {json.dumps(before)} && {SETTLED}")
        s = b.action(page, "click", sorted_cond, lambda p=page, h=header: p.click(h))
        top = page.get_attribute("[data-testid=runs-row][data-index='0']", "data-run-id")
        filtered_cond = (f"document.querySelector(\"[data-testid=runs-row][data-index='0']\")"
                         f".dataset.runId !== {json.dumps(top)} && {SETTLED}")
        box = page.locator("[data-testid=filter-input]")
        box.fill(FILTER)
        f = b.action(page, "keydown", filtered_cond, lambda bx=box: bx.press("Enter"))
        page.close()
        if i:  # the first was the warm-up
            sorts.append(s)
            filters.append(f)
            sort_api.append(api_ms(requests[-2:-1]))
            filter_api.append(api_ms(requests[-1:]))
    t.add(f"  sort by a metric column (click -> rows), {RUNS:,} runs", ms(median(sorts)),
          f"its /api/runs alone {ms(median(sort_api))}")
    t.add(f"  filter `{FILTER}` (Enter -> rows)", ms(median(filters)),
          f"its /api/runs alone {ms(median(filter_api))}")


def chart_cond(chart_id: str) -> str:
    return (f"((window.__runstream.charts || {{}})[{json.dumps(chart_id)}] || {{series: []}})"
            f".series.some(s => s.points > 0) && {SETTLED}")


def bench_series(b: Browser, base: str, t: Table) -> None:
    url = f"{base}/#/run/long1m?tab=metrics"
    cond = chart_cond("metric:loss")
    page_ms, api = repeat_load(b, url, cond)
    t.add(f"{POINTS:,}-point series: navigation -> chart drawn", ms(page_ms),
          f"its /api requests alone {ms(api)}")
    zooms, zoom_api, sent = [], [], []
    for i in range(REPEAT + 1):
        requests: list[str] = []
        _, page = b.load(url, cond, keep=True)
        page.on("request", lambda r, rq=requests: rq.append(r.url) if "/api/history" in r.url
                else None)
        n = page.evaluate("window.__runstream.charts['metric:loss'].fetches")
        zoomed = (f"window.__runstream.charts['metric:loss'].fetches > {n} && "
                  f"window.__runstream.charts['metric:loss'].zoom && {SETTLED}")
        z = b.action(page, "mouseup", zoomed, lambda p=page: drag(p, "metric:loss", 0.3, 0.5))
        sent.append(page.evaluate("window.__runstream.charts['metric:loss'].series[0].points"))
        page.close()
        if i:
            zooms.append(z)
            zoom_api.append(api_ms(requests[-1:]))
    t.add(f"  zoom (drag 20% -> re-fetched range drawn, {max(sent):,} pts)", ms(median(zooms)),
          f"its /api/history alone {ms(median(zoom_api))}")


def bench_compare(b: Browser, base: str, t: Table) -> None:
    runs = "&".join(f"run=cmp{i:06d}" for i in range(COMPARE_RUNS))
    url = f"{base}/#/compare?{runs}&key=loss"
    cond = ("((window.__runstream.charts || {}).compare || {series: []}).series"
            f".filter(s => s.points > 0 && s.envelope).length === {COMPARE_RUNS} && {SETTLED}")
    page_ms, api = repeat_load(b, url, cond)
    t.add(f"compare {COMPARE_RUNS} runs x {COMPARE_POINTS:,} pts with min/max bands: "
          "navigation -> chart drawn", ms(page_ms), f"its /api requests alone {ms(api)}")


LIVE_JOB = """
import json, sys, time
from pathlib import Path
import runstream
run_id, go, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
rate, seconds = float(sys.argv[4]), float(sys.argv[5])
with runstream.init(experiment="live", run_id=run_id) as run:
    run.log({"loss": 1.0}, step=0)
    run.flush(5.0)
    while not go.exists():
        time.sleep(0.01)
    logged, step, start = [], 1, time.time()
    while time.time() - start < seconds:
        due = start + step / rate
        time.sleep(max(0.0, due - time.time()))
        run.log({"loss": 1.0 / (step + 1)}, step=step)
        logged.append((step, time.time() * 1000))
        step += 1
Path(out).write_text(json.dumps(logged))
"""


def latencies(logged: list[tuple[int, float]], seen: list[tuple[int, float]]) -> list[float]:
    """Per logged step, ms until the first sighting of that step or a later one."""
    out, j = [], 0
    seen = sorted(seen, key=lambda x: x[1])
    best = -1
    marks: list[tuple[int, float]] = []
    for step, at in seen:  # running maximum: (highest step seen so far, when)
        if step > best:
            best = step
            marks.append((step, at))
    for step, at in logged:
        while j < len(marks) and marks[j][0] < step:
            j += 1
        if j == len(marks):
            break
        out.append(marks[j][1] - at)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench_live(b: Browser, base: str, env: dict[str, str], home: Path, t: Table) -> None:
    from runstream.query.client import Client
    from runstream.query.models import PointsUpdate

    run_id, go, out = "live-bench", home / "live.go", home / "live.json"
    job = subprocess.Popen([sys.executable, "-c", LIVE_JOB, run_id, str(go), str(out),
                            str(LIVE_RATE_HZ), str(LIVE_S)], env=env)
    client = Client(env["RUNSTREAM_QUERY_ADDR"], timeout_s=30)
    grpc_seen: list[tuple[int, float]] = []
    stop = threading.Event()

    def follow() -> None:
        for u in client.follow(run_id, ["loss"], from_step=-1, stop=stop):
            if isinstance(u, PointsUpdate) and u.steps:
                grpc_seen.append((max(u.steps), time.time() * 1000))

    try:
        def visible() -> bool:
            try:
                return bool(client.get_run(run_id).ranks)
            except Exception:
                return False

        wait_until(visible, 120, "the live run")
        follower = threading.Thread(target=follow, name="bench-ui-follow", daemon=True)
        follower.start()
        page = b.page()
        page.goto(f"{base}/#/run/{run_id}?tab=metrics")
        page.wait_for_function(f"{SETTLED} && document.querySelector("
                               "'[data-testid=live-indicator]').dataset.live === '1'")
        page.evaluate("""() => { window.__seen = []; let last = -1;
          const loop = () => requestAnimationFrame(() => {
            const c = (window.__runstream.charts || {})['metric:loss'];
            const s = c && c.series[0] ? c.series[0].lastStep : -1;
            if (s > last) { last = s; const at = Date.now();
              requestAnimationFrame(() => window.__seen.push([s, at])); }
            loop(); });
          loop(); }""")
        go.touch()
        if job.wait(timeout=LIVE_S + 120) != 0:
            raise SystemExit("bench_ui: the live job failed")
        logged = [tuple(x) for x in json.loads(out.read_text())]
        last = logged[-1][0]
        page.wait_for_function(f"window.__seen.length && window.__seen[window.__seen.length-1]"
                               f"[0] >= {last}", timeout=120_000, polling=100)
        wait_until(lambda: bool(grpc_seen) and grpc_seen[-1][0] >= last, 120, "gRPC follow")
        ui = latencies(logged, [tuple(x) for x in page.evaluate("window.__seen")])
        grpc = latencies(logged, grpc_seen)
        page.close()
    finally:
        stop.set()
        client.close()
        if job.poll() is None:
            job.kill()
    rate = len(logged) / LIVE_S
    t.add(f"live: Run.log -> point on screen, {rate:,.0f} points/s for {LIVE_S:.0f} s, "
          f"p50 / p99 over {len(ui):,} points", f"{ms(pct(ui, 0.5))} / {ms(pct(ui, 0.99))}",
          f"gRPC FollowRun {ms(pct(grpc, 0.5))} / {ms(pct(grpc, 0.99))}")


def bench_side_by_side(b: Browser, base: str, ml_base: str | None,
                       ml_ids: tuple[str, str, str] | None, t: Table) -> None:
    rs_runs, rs_api = repeat_load(b, f"{base}/#/runs?experiment={SIDE_EXPERIMENT}",
                                  "!!document.querySelector('[data-testid=runs-row]')")
    rs_series, series_api = repeat_load(b, f"{base}/#/run/side-long?tab=metrics",
                                        chart_cond("metric:loss"))
    if ml_base is None or ml_ids is None:
        t.add(f"runs table, {SIDE_RUNS:,} runs: navigation -> first rows", ms(rs_runs),
              f"its /api requests alone {ms(rs_api)}")
        t.add(f"{SIDE_POINTS:,}-point series: navigation -> chart drawn", ms(rs_series),
              f"its /api requests alone {ms(series_api)}")
        return
    experiment, series_experiment, series_run = ml_ids
    ml_runs, _ = repeat_load(
        b, f"{ml_base}/#/experiments/{experiment}/runs",
        "[...document.querySelectorAll('.ag-row')].some(r => /side\\d/.test(r.textContent))")
    ml_series, _ = repeat_load(
        b, f"{ml_base}/#/experiments/{series_experiment}/runs/{series_run}/model-metrics",
        "/^M[-\\d.]+,[-\\d.]+L/.test(document.querySelector("
        "'.js-plotly-plot .scatterlayer path.js-line')?.getAttribute('d') || '')")
    t.add(f"runs table, {SIDE_RUNS:,} runs: navigation -> first rows: Runstream", ms(rs_runs),
          f"MLflow UI {ms(ml_runs)}", f"MLflow {ml_runs / rs_runs:.1f}x")
    t.add(f"{SIDE_POINTS:,}-point series: navigation -> chart drawn: Runstream",
          ms(rs_series), f"MLflow UI {ms(ml_series)}", f"MLflow {ml_series / rs_series:.1f}x")


def main() -> int:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        print(f"bench_ui: {CHROMIUM} is missing; run `make browser`", file=sys.stderr)
        return 1
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="rs-bench-ui-"))
    try:
        env = runstream_env(home)
        t0 = time.perf_counter()
        filler = subprocess.Popen([sys.executable, __file__, "fill", str(home)], cwd=HERE)
        ml_ids = None
        if WITH_MLFLOW:
            ml_ids = fill_mlflow(home)
            print(f"filled MLflow (sqlite, MlflowClient) with {SIDE_RUNS:,} runs and a "
                  f"{SIDE_POINTS:,}-point series in {time.perf_counter() - t0:.0f}s", flush=True)
        if filler.wait() != 0:
            raise SystemExit("bench_ui: filling the Runstream store failed")
        print(f"filled Runstream (chdb, INSERT ... SELECT into its tables) in "
              f"{time.perf_counter() - t0:.0f}s (both at once)", flush=True)
        base = f"http://{env['RUNSTREAM_UI_ADDR']}"
        ml_port = free_port()
        ml_base = f"http://127.0.0.1:{ml_port}" if WITH_MLFLOW else None
        with process([sys.executable, "-m", "runstream.cli.main", "serve"], env,
                     home / "serve.log"), \
                process([str(Path(sys.executable).parent / "mlflow"), "server",
                         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                         "--default-artifact-root", str(home / "mlartifacts"),
                         "--host", "127.0.0.1", "--port", str(ml_port), "--workers", "1"]
                        if WITH_MLFLOW else ["true"], dict(os.environ), home / "mlflow.log"):
            wait_until(lambda: http_ok(f"{base}/api/health"), 180, "runstream serve")
            if ml_base is not None:
                wait_until(lambda: http_ok(f"{ml_base}/health"), 180, "mlflow server")
            table = Table()
            with sync_playwright() as pw:
                b = Browser(pw)
                try:
                    bench_runs_table(b, base, table)
                    bench_series(b, base, table)
                    bench_compare(b, base, table)
                    bench_live(b, base, env, home, table)
                    bench_side_by_side(b, base, ml_base, ml_ids, table)
                finally:
                    b.close()
        print("\nWeb UI in headless Chromium (Runstream store filled straight into its chdb"
              " tables; MLflow via MlflowClient on sqlite):")
        print(table.render())
        print(f"\ntotal {time.perf_counter() - started:.0f}s")
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["fill"]:
        sys.path.insert(0, str(HERE))
        fill_runstream(Path(sys.argv[2]))
        sys.exit(0)
    sys.path.insert(0, str(HERE))
    sys.exit(main())
