"""Small helpers the browser tests share: open a route and wait for its view, read the
DOM and the ``window.__runstream`` hooks (query/web/TESTING.md), poll with a deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tests.helpers import wait_for

T = TypeVar("T")

# The view's first load done and nothing in flight (TESTING.md, "Waiting for a view").
SETTLED = ("() => !!(window.__runstream && window.__runstream.ready"
           " && document.querySelector('[data-testid=view]')"
           " && document.querySelector('[data-testid=view]').dataset.loading === '0')")


def settle(page: Any, view: str | None = None) -> None:
    """Wait until the current view (``view``, when given) has loaded and no request of it
    is in flight. With ``view`` the wait includes the view's name: right after a click
    that changes the hash, the old view is still the settled one until the hashchange
    runs (the UI resets ``ready`` and the name together, hooks.resetHooks)."""
    if view is None:
        page.wait_for_function(SETTLED)
        return
    page.wait_for_function(f"(view) => document.body.dataset.view === view && ({SETTLED})()",
                           arg=view)
    assert page.evaluate("document.body.dataset.view") == view


def goto(page: Any, base: str, route: str, view: str | None = None) -> None:
    """Open ``base/#route`` (route like "/runs?filter=...") and wait for its view."""
    page.goto(f"{base}/#{route}")
    settle(page, view)


def until(page: Any, fetch: Callable[[], T], done: Callable[[T], bool] = bool,
          what: str = "the page", timeout_s: float = 20.0) -> T:
    """Poll ``fetch`` (a read of the page) until ``done`` holds."""
    return wait_for(fetch, done, timeout_s=timeout_s, interval_s=0.05, what=what)


def attr_all(page: Any, selector: str, name: str) -> list[str]:
    """``dataset[name]`` of every element matching ``selector``, in document order."""
    return list(page.eval_on_selector_all(selector, f"els => els.map(e => e.dataset.{name})"))


def row_ids(page: Any) -> list[str]:
    """Run ids of the runs table's rows in the DOM, in row order."""
    return list(page.eval_on_selector_all(
        "[data-testid=runs-row]",
        "els => els.sort((a, b) => a.dataset.index - b.dataset.index)"
        ".map(e => e.dataset.runId)"))


def chart(page: Any, chart_id: str) -> dict[str, Any] | None:
    """The hook record of one chart (series, zoom, fetches, maxPoints), or None."""
    return page.evaluate("id => (window.__runstream.charts || {})[id] || null", chart_id)


def hooks(page: Any, name: str) -> Any:
    return page.evaluate("n => window.__runstream[n] === undefined ? null"
                         " : JSON.parse(JSON.stringify(window.__runstream[n]))", name)
