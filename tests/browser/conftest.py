"""The browser tests' parts: Debian's Chromium driven by Playwright, one real
`runstream serve` (gRPC + the web UI's gateway) per session, fed once by real SDK
processes (tests/browser/data_job.py), and screenshots of every view.

A missing /usr/bin/chromium is an error (``make browser`` installs it), never a skip.
Every test here carries the ``browser`` mark and the xdist group ``browser``, so with
``--dist loadgroup`` one worker runs them all against one serve and one browser.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from tests.browser.world import (
    ARTIFACT_BYTES,
    BATCH_SIZES,
    CHROMIUM,
    CHROMIUM_ARGS,
    DIST,
    DIVERGE_STEP,
    LONG_POINTS,
    LRS,
    OTHER,
    RANK_STEPS,
    SLOW_RANK,
    SWEEP,
    SWEEP_STEPS,
    TOKEN,
    VIEWPORT,
    WORLD_SIZE,
    World,
    http_ok,
    ingested,
    job,
    start_world,
)
from tests.helpers import serving, wait_for


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's Chromium against a real serve")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.xdist_group("browser"))


# --- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium from /usr/bin/chromium (a fresh profile), for the session."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make browser` (deploy/browser.sh)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def new_page(browser: Any, world: World | None) -> tuple[Any, Any]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(20_000)
    if world is not None:  # the session cookie, from the real login endpoint
        answer = context.request.post(f"{world.url}/api/login", data={"token": TOKEN})
        assert answer.status == 204, answer.text()
    return context, context.new_page()


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    """A page in a context of its own (no cookies or storage from other tests), logged in
    to the world's serve."""
    yield from _page(browser, world)


@pytest.fixture
def anonymous_page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context that has not logged in."""
    yield from _page(browser, None)


def _page(browser: Any, world: World | None) -> Iterator[Any]:
    context, pg = new_page(browser, world)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``shot(page, name)``: a PNG of the page in $RUNSTREAM_SCREENSHOTS (else the test's
    tmp dir), named ``<name>.png``; returns its path."""
    out = Path(os.environ.get("RUNSTREAM_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)

    def take(pg: Any, name: str) -> Path:
        path = out / f"{name}.png"
        pg.screenshot(path=str(path))
        return path

    return take


# --- the service and its data ---------------------------------------------------------------


def live_points(client: Client, run_id: str) -> int:
    try:
        return len(client.metric_history(run_id, "loss").steps)
    except NotFoundError:
        return 0


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One serve with every kind of data the views show, written once by the real SDK
    while the serve starts, and waited for until ingested (the live run keeps logging
    until a test, or the teardown, creates its stop file)."""
    root = tmp_path_factory.mktemp("browser")
    env, url = start_world(root)
    tag = uuid.uuid4().hex[:6]
    sweep = [{"run_id": f"sweep-{tag}-{i}", "experiment": SWEEP, "lr": lr,
              "batch_size": BATCH_SIZES[i], "name": f"sweep-lr{lr}"}
             for i, lr in enumerate(LRS)]
    other = [{"run_id": f"other-{tag}-{i}", "experiment": OTHER, "lr": 0.05 * (i + 1),
              "batch_size": 16, "name": f"other-{i}"} for i in range(2)]
    dist_run, long_run = f"dist-{tag}", f"long-{tag}"
    artifact_run, live_run = f"artifact-{tag}", f"live-{tag}"
    model, data = root / "model.bin", root / "train.csv"
    model.write_bytes(ARTIFACT_BYTES)
    data.write_text("x,y\n1,2\n3,4\n")
    barrier = root / "barrier"
    barrier.mkdir()
    live_stop = root / "live.stop"
    import hashlib

    procs = [
        job(env, "sweep", {"runs": sweep + other, "steps": SWEEP_STEPS}),
        *(job(env, "rank", {"experiment": DIST, "steps": RANK_STEPS, "slow_rank": SLOW_RANK,
                            "diverge_step": DIVERGE_STEP, "barrier": str(barrier),
                            "step_s": 0.02, "slow_step_s": 0.04},
              {"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(WORLD_SIZE),
               "RUNSTREAM_RUN_ID": dist_run})
          for r in range(WORLD_SIZE)),
        job(env, "long", {"experiment": DIST, "run_id": long_run, "points": LONG_POINTS}),
        job(env, "artifact", {"experiment": DIST, "run_id": artifact_run,
                              "artifact": str(model), "input": str(data)}),
    ]
    live_proc = job(env, "live", {"experiment": DIST, "run_id": live_run,
                                  "stop": str(live_stop), "interval_s": 0.2})
    try:
        with serving(env, log=root / "serve.log"), \
                Client(env["RUNSTREAM_QUERY_ADDR"], environ=env, timeout_s=30) as client:
            assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
            for run_id in [r["run_id"] for r in sweep + other] + [long_run, artifact_run]:
                wait_for(functools.partial(ingested, client, run_id), timeout_s=120,
                         what=f"run {run_id} ingested")
            wait_for(lambda: ingested(client, dist_run, WORLD_SIZE), timeout_s=120,
                     what="the 4-rank run ingested")
            wait_for(lambda: live_points(client, live_run) >= 3, timeout_s=60,
                     what="the live run's first points")
            wait_for(lambda: http_ok(f"{url}/api/health"), timeout_s=60, what="the web UI")
            yield World(env=env, url=url, client=client, sweep=sweep, other=other,
                        dist_run=dist_run, long_run=long_run, artifact_run=artifact_run,
                        artifact_sha256=hashlib.sha256(ARTIFACT_BYTES).hexdigest(),
                        live_run=live_run, live_stop=live_stop, live_proc=live_proc,
                        procs=procs)
    finally:
        live_stop.touch()
        for p in [*procs, live_proc]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
