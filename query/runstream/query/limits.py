"""The documented limits of the query API (query.proto), with one owner.

The service enforces them; the client and the CLI use the defaults. Counts unless the
name says otherwise (``*_MS``: milliseconds).
"""

from __future__ import annotations

#: SearchRuns page size: 0 in a request means the default.
DEFAULT_RUNS_PAGE_SIZE = 100
MAX_RUNS_PAGE_SIZE = 1000
#: GetMetricHistory page size (points): 0 in a request means the default.
DEFAULT_HISTORY_PAGE_SIZE = 100_000
MAX_HISTORY_PAGE_SIZE = 1_000_000
#: ExportMetricHistory: points per streamed chunk (about 1.5 MB on the wire).
MAX_EXPORT_CHUNK = 65_536
#: Ranks in one rank filter.
MAX_RANKS_FILTER = 65_536
#: Experiments in one SearchRuns request.
MAX_EXPERIMENTS_FILTER = 100
#: GetMetricHistory's max_points (0 = every point, paged).
MIN_MAX_POINTS = 2
MAX_MAX_POINTS = 10_000
#: Runs in one CompareRuns, and metric keys it summarizes.
MIN_COMPARED_RUNS = 2
MAX_COMPARED_RUNS = 50
MAX_COMPARED_METRICS = 200
#: FollowRun: points per update, and keys in one request.
MAX_FOLLOW_BATCH = 10_000
MAX_FOLLOW_KEYS = 1000
#: ListExperiments answers at most this many.
MAX_EXPERIMENTS_LISTED = 10_000
#: GetIngestStatus: consumers heard from within this window.
INGEST_WINDOW_MS = 60_000
#: GetMetricHistories: distinct runs, distinct keys and (run, key) series in one call;
#: the max_points of the UI calls when none is given.
MAX_HISTORIES_RUNS = 50
MAX_HISTORIES_KEYS = 20
MAX_HISTORIES_SERIES = 200
#: ... and series x max_points (a 64 MiB answer holds about 1.4 million downsampled points).
MAX_HISTORIES_POINTS = 1_000_000
DEFAULT_UI_MAX_POINTS = 1000
#: GetRankLag: step buckets.
MIN_LAG_STEPS = 2
MAX_LAG_STEPS = 2000
DEFAULT_LAG_STEPS = 200
#: SearchRuns: columns asked for beside each run.
MAX_SEARCH_COLUMNS = 50
#: ListRunKeys: keys of each kind.
MAX_RUN_KEYS = 1000
