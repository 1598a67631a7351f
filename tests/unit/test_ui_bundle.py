"""The committed web UI bundle (runstream/query/static/) is exactly what query/web builds.

``npm ci`` (when query/web/node_modules is missing or out of step with package-lock.json)
and ``node build.mjs`` into a temporary folder must reproduce the committed files byte for
byte, and the bundle must stay small. Needs Node and npm (and the npm registry for the first
``npm ci``): a missing ``node``/``npm`` fails with a message rather than skipping.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "query" / "web"
STATIC = ROOT / "query" / "runstream" / "query" / "static"
BUNDLE = ("index.html", "app.js", "app.css")
MAX_GZIPPED = 100 * 1024


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: the web UI bundle check needs Node.js 20+ and "
                    "npm (install them, then `cd query/web && npm ci && node build.mjs`)")
    return path


def _modules_match_lock() -> bool:
    """True when node_modules holds exactly the versions package-lock.json pins."""
    installed = WEB / "node_modules" / ".package-lock.json"
    if not installed.is_file():
        return False
    want = json.loads((WEB / "package-lock.json").read_text())["packages"]
    have = json.loads(installed.read_text())["packages"]
    for path, meta in want.items():
        if not path or (meta.get("optional") and path not in have):
            continue
        if have.get(path, {}).get("version") != meta.get("version"):
            return False
    return True


def _run(cmd: list[str], timeout_s: float) -> None:
    proc = subprocess.run(cmd, cwd=WEB, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def test_bundle_is_built_from_source(tmp_path: Path) -> None:
    node = _tool("node")
    npm = _tool("npm")
    if not _modules_match_lock():
        _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], timeout_s=600)
    out = tmp_path / "static"
    _run([node, "build.mjs", str(out)], timeout_s=120)
    assert sorted(p.name for p in out.iterdir()) == sorted(BUNDLE)
    assert sorted(p.name for p in STATIC.iterdir()) == sorted(BUNDLE), (
        "runstream/query/static/ holds only the bundle's files")
    for name in BUNDLE:
        built = (out / name).read_bytes()
        committed = (STATIC / name).read_bytes()
        assert built == committed, (
            f"static/{name} is not what query/web builds: run `cd query/web && npm ci && "
            "node build.mjs` and commit the result")
    # A second build gives the same bytes (no timestamps, no absolute paths).
    again = tmp_path / "again"
    _run([node, "build.mjs", str(again)], timeout_s=120)
    for name in BUNDLE:
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_bundle_is_small_and_keeps_licences() -> None:
    js = (STATIC / "app.js").read_bytes()
    css = (STATIC / "app.css").read_bytes()
    size = len(gzip.compress(js, 9, mtime=0)) + len(gzip.compress(css, 9, mtime=0))
    assert size <= MAX_GZIPPED, f"app.js + app.css are {size} bytes gzipped (limit {MAX_GZIPPED})"
    assert b"uPlot" in js and b"MIT License" in js, "uPlot's licence travels with the bundle"
    assert str(ROOT).encode() not in js and str(ROOT).encode() not in css, "no absolute paths"


def test_index_html_references_only_the_bundle() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert sorted(refs) == ["/assets/app.css", "/assets/app.js"], refs
    assert "http://" not in html and "https://" not in html and "<style" not in html
    assert (WEB / "src" / "index.html").read_bytes() == (STATIC / "index.html").read_bytes()
