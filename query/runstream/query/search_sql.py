"""SearchRuns as SQL: a parsed filter and order-by compiled into one query (pure, thread-safe).

Every name and value of the filter is a bound parameter (``{c<i>_k:String}``, ...); the
SQL text is assembled only from the constants below, chosen by the AST's enums, and from
placeholder names generated from clause indexes, never from input. (That is why S608 is
silenced on those f-strings.) The query reads ``runs`` (a run's head row: lowest rank,
newest), rank 0's latest status in the run's latest attempt from ``run_status``, one
pass each over ``metric_summaries``, ``param_values`` and ``tags`` for every key of that
kind the filter and the order-by name, one each over the latest ``inputs`` and
``artifacts`` for the clauses on them (all joined on run_id), and ``annotations`` for the
archived runs it leaves out (or keeps: :data:`VIEW_WHERE`).

Pages are keyset pages: :attr:`CompiledSearch.keyset` lists the sort columns (the
order-by items, then MLflow's natural order: start_ms descending, run_id ascending, so
runs with equal order-by keys keep that order, as MLflow's stable sort keeps them), and
a next page starts strictly after the keyset values of the last row served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runstream.proto import status, tables
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.sortkeys import PARAM_FIRST_KEY, RANK_NEWEST_KEY, TS_SEQ_KEY
from runstream.query.filters import LIST_OPS, USER_TAG, Agg, Clause, Kind, Op, OrderBy
from runstream.query.sql import fill

_OPS_SQL: Mapping[Op, str] = {
    Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=",
    Op.LIKE: "LIKE", Op.ILIKE: "ILIKE", Op.NOT_LIKE: "NOT LIKE", Op.NOT_ILIKE: "NOT ILIKE",
    Op.IN: "IN", Op.NOT_IN: "NOT IN", Op.IS_NULL: "IS NULL", Op.IS_NOT_NULL: "IS NOT NULL",
}
# Over the rows of one key among several: `$k` is that key's placeholder.
_METRIC_AGG_IF_SQL: Mapping[Agg, str] = {
    Agg.LATEST: "argMaxMergeIf(last, key = $k)", Agg.MIN: "minIf(min, key = $k)",
    Agg.MAX: "maxIf(max, key = $k)",
}
# A param's value: the first logged by the lowest rank (params are immutable; the earliest
# row is the one FINAL would keep, so no FINAL is needed).
_PARAM_IF_SQL = f"argMinIf(value, {PARAM_FIRST_KEY}, key = $k)"
_ATTRIBUTE_SQL: Mapping[str, str] = {
    "run_id": "r.run_id", "experiment": "r.run_experiment", "name": "r.run_name",
    # A run that has not ended has no end time (MLflow: None), so no comparison matches.
    "status": "run_status", "start_ms": "r.start_ms", "end_ms": "nullIf(run_end_ms, 0)",
    # MLflow's user tag, read in the tags pass as the key named "u" (_KeyPass.add).
    "world_size": "r.run_world_size", "user_id": "if(ifNull(t.u_has, 0), t.u_t, '')",
    # Only for order_by (the run's least URI, from the artifacts pass): a filter on
    # artifact_uri tests each artifact.
    "artifact_uri": "a.v",
}
_ATTRIBUTE_TYPE: Mapping[str, str] = {
    "run_id": "String", "experiment": "String", "name": "String", "status": "String",
    "start_ms": "Int64", "end_ms": "Int64", "world_size": "UInt32", "user_id": "String",
    "artifact_uri": "String",
}
# A negated operator on a many-valued field (the run's artifact URIs) means "none matches".
_POSITIVE: Mapping[Op, Op] = {
    Op.NE: Op.EQ, Op.NOT_LIKE: Op.LIKE, Op.NOT_ILIKE: Op.ILIKE, Op.NOT_IN: Op.IN,
}
# No FINAL in the search: a projection is never read under FINAL, so each read takes the
# latest version itself (argMax over the table's version), as FINAL would.
# A tag's value: its latest version (tags' ver, as ReplacingMergeTree(ver) keeps).
_TAG_IF_SQL = "argMaxIf(value, ver, key = $k)"
# Each artifact (run, name, rank) at its latest version, as ReplacingMergeTree(ts_ms) keeps.
_ARTIFACT_URIS = """(SELECT run_id, argMax(uri, ts_ms) AS uri FROM artifacts WHERE 1$scope
    GROUP BY run_id, name, rank)"""
# Each input (run, rank, name, uri) at its latest version (ReplacingMergeTree(ts_ms)).
_INPUTS = """(SELECT run_id, name, uri, argMax(digest, ts_ms) AS digest,
    argMax(role, ts_ms) AS role FROM inputs WHERE 1$scope GROUP BY run_id, rank, name, uri)"""
_DATASET_SQL: Mapping[str, str] = {"name": "name", "digest": "digest", "uri": "uri", "role": "role"}

_SEARCH_BASE = """
SELECT
    r.run_id AS run_id, r.run_experiment AS experiment, r.run_name AS name,
    r.run_world_size AS world_size, r.start_ms AS start_ms,
    ifNull(s.status, {unspecified:String}) AS run_status,
    if(run_status IN {terminal:Array(String)}, ifNull(s.last_ms, 0), 0) AS run_end_ms$sort_cols
FROM (
    WITH $rank_newest AS rank_newest
    SELECT run_id,
        argMin(experiment, rank_newest) AS run_experiment,
        argMin(name, rank_newest) AS run_name,
        argMin(world_size, rank_newest) AS run_world_size,
        min(ts_ms) AS start_ms
    FROM runs
    $experiment_where
    GROUP BY run_id
) AS r
LEFT JOIN (
    WITH $ts_seq AS ts_seq
    SELECT run_id, argMax(status, ts_seq) AS status, max(ts_ms) AS last_ms
    FROM run_status
    WHERE rank = 0$scope
    GROUP BY run_id
) AS s ON s.run_id = r.run_id$joins
WHERE 1$where
ORDER BY $order
LIMIT {limit:UInt32}
SETTINGS join_use_nulls = 1$settings
"""
_EXPERIMENT_WHERE = "WHERE experiment IN {experiments:Array(String)}"
#: The rows of the experiments searched, in every table the search reads: each has an
#: ``experiment`` column and a projection sorted by it (tables.PROJECTION), so this reads
#: only the experiments' granules however big the store is. Rows written before the column
#: existed hold ''; they are found through run_experiments (the runs of the experiments,
#: a set built first). A run whose ranks were started under different experiments is
#: found in each, with the rows logged under it.
#: The runs of the experiments searched, as a condition on run_id (run_experiments).
EXPERIMENT_RUNS = ("run_id IN (SELECT run_id FROM run_experiments"
                   " WHERE experiment IN {experiments:Array(String)})")
SCOPE = f"(experiment IN {{experiments:Array(String)}} OR experiment = '' AND {EXPERIMENT_RUNS})"
#: The same rows without the set, for experiments that are most of the store (the set of
#: their run ids costs more than it saves): the older rows of every run pass, and the
#: join on the experiments' runs keeps theirs.
PREFILTER = "(experiment IN {experiments:Array(String)} OR experiment = '')"
#: Where the search is not scoped, the projections hold nothing to skip, yet ClickHouse
#: still picked them for some reads: a whole-store search of 100k runs took 693 ms with
#: them and 618 ms without (deploy/bench/bench_growth.py's fill, measured by hand).
_NO_PROJECTIONS = ", optimize_use_projections = 0"
#: The runs whose latest archive action (by ts_ms; annotations.archive "" = none) is
#: ARCHIVE: what SearchRuns leaves out unless asked for, and ListExperiments' counts too.
ARCHIVED_RUNS = """SELECT run_id FROM annotations WHERE archive != ''
    GROUP BY run_id HAVING argMax(archive, tuple(ts_ms, producer_id, seq)) = 'ARCHIVE'"""
#: Whether each run ever archived or restored is archived now (as ARCHIVED_RUNS decides),
#: joined for the view's condition: a set of the archived runs, `r.run_id NOT IN (...)`,
#: was pushed into every read of the search (a 1M-run search with half its runs archived:
#: 2.48 s against 1.59 s for view ALL; deploy/bench/bench_growth.py's fill, by hand).
#: $runs narrows it to the runs of the experiments searched (:data:`ANNOTATED_RUNS`).
_ARCHIVED_JOIN = """
LEFT JOIN (
    SELECT run_id, argMax(archive, tuple(ts_ms, producer_id, seq)) = 'ARCHIVE' AS archived
    FROM annotations WHERE archive != ''$runs GROUP BY run_id
) AS x ON x.run_id = r.run_id"""
#: A scoped search's archive actions: those of the experiments' runs, by run id (a run's
#: annotations carry its head experiment, and a run started under several is found in
#: each, so their experiment column would miss some). Without it, a 5,000-run experiment's
#: search grouped every archive action of the store: 234-254 ms against 94-101 ms with
#: 500k archived runs elsewhere (bench_growth's fill, alternated by hand).
ANNOTATED_RUNS = f" AND {EXPERIMENT_RUNS}"
#: SearchRunsRequest.view (its value names) -> the condition on the run (on _ARCHIVED_JOIN),
#: chosen by code.
VIEW_WHERE: Mapping[str, str] = {
    "ACTIVE_ONLY": "NOT ifNull(x.archived, 0)",
    "ARCHIVED_ONLY": "ifNull(x.archived, 0)",
    "ALL": "",
}
# Whether any of a run's artifacts (inputs) matches each condition the search names on
# them, in one pass over their latest versions ($source), joined on run_id as _KEYS_JOIN
# below (an IN set of every run with an artifact was pushed into every other read too:
# 4.79 s against 2.11 s for a 1M-run search with `artifact_uri LIKE` matching every run).
_ANY_JOIN = """
LEFT JOIN (
    SELECT run_id$columns
    FROM $source
    GROUP BY run_id
) AS $alias ON $alias.run_id = r.run_id"""
# Every key of one kind (metrics, params, tags) that the filter and the order_by name, read
# in one pass over its table and joined on run_id: reading the argMax states costs far more
# than merging them, each pass reads the rows of every key (keys interleave within a run's
# rows), and a clause as `run_id IN (subquery)` was pushed into every other read of the
# query (bench_growth's 1M-run search, A/B in one process: 2.17 s with its param clause as
# IN, 1.54 s in a pass; with two more IS [NOT] NULL clauses 2.93 s against 1.42 s).
_KEYS_JOIN = """
LEFT JOIN (
    SELECT run_id$columns
    FROM $table
    WHERE key IN $keys$scope
    GROUP BY run_id
) AS $alias ON $alias.run_id = r.run_id"""


@dataclass(frozen=True, slots=True)
class SortColumn:
    """One column of the keyset: its SELECT alias, ClickHouse type and direction."""

    alias: str
    ch_type: str
    descending: bool


@dataclass(frozen=True, slots=True)
class CompiledSearch:
    sql: str
    parameters: dict[str, Any]
    #: The keyset, in ORDER BY order (ends with start_ms DESC, run_id ASC).
    keyset: tuple[SortColumn, ...]


def _value_param(clause: Clause, name: str, numeric: bool) -> tuple[str, Any]:
    """The placeholder text and the bound value of a clause's value(s)."""
    ch_type = "Float64" if numeric else "String"
    if clause.op in LIST_OPS:
        return f"{{{name}:Array({ch_type})}}", list(clause.values)
    return f"{{{name}:{ch_type}}}", clause.values[0]


class _KeyPass:
    """The columns of one table's single join (:data:`_KEYS_JOIN`): (has, value) per
    (key, value expression) the search names, each computed once however often it is
    named; the table's alias is ``alias``, its keys' parameter ``keys_param``."""

    def __init__(self, params: dict[str, Any], table: str, alias: str, keys_param: str) -> None:
        self._params = params
        self.table, self.alias, self.keys_param = table, alias, keys_param
        self.columns: list[str] = []
        self._named: dict[tuple[str, str], tuple[str, str]] = {}

    def add(self, name: str, key: str, value_if_sql: str) -> tuple[str, str]:
        """(has-the-key, value) expressions, NULL for a run without any key of the pass;
        ``name`` is the placeholder prefix (``c0``, ``o1``) where the pair is new;
        ``value_if_sql`` aggregates the rows where ``key = $k``."""
        named = self._named.get((key, value_if_sql))
        if named is not None:
            return named
        k = f"{name}_k"
        self._params[k] = key
        placeholder = f"{{{k}:String}}"
        self.columns.append(f"countIf(key = {placeholder}) > 0 AS {name}_has")
        self.columns.append(f"{fill(value_if_sql, k=placeholder)} AS {name}_{self.alias}")
        named = self._named[(key, value_if_sql)] = (f"{self.alias}.{name}_has",
                                                    f"{self.alias}.{name}_{self.alias}")
        return named

    def join(self, scope: str) -> str:
        """The join, or "" when the search names no key of this kind."""
        if not self.columns:
            return ""
        self._params[self.keys_param] = sorted({key for key, _ in self._named})
        return fill(_KEYS_JOIN, columns="".join(",\n        " + c for c in self.columns),
                    table=self.table, keys=f"{{{self.keys_param}:Array(String)}}",
                    scope=scope, alias=self.alias)


class _AnyPass:
    """The columns of one join over ``source`` (:data:`_ANY_JOIN`, ``$scope`` in it): per
    condition the search names, whether any of a run's rows matches it."""

    def __init__(self, source: str, alias: str) -> None:
        self.source, self.alias = source, alias
        self.columns: list[str] = []

    def any(self, name: str, condition: str) -> str:
        """Whether some row of the run matches ``condition`` (false for a run without rows);
        ``name`` is the clause's placeholder prefix."""
        self.columns.append(f"countIf({condition}) > 0 AS {name}_any")
        return f"ifNull({self.alias}.{name}_any, 0)"

    def column(self, sql: str) -> None:
        """One more column of the pass (``expr AS alias``), once."""
        if sql not in self.columns:
            self.columns.append(sql)

    def join(self, scope: str) -> str:
        if not self.columns:
            return ""
        return fill(_ANY_JOIN, columns="".join(",\n        " + c for c in self.columns),
                    source=fill(self.source, scope=scope), alias=self.alias)


@dataclass(frozen=True, slots=True)
class _Passes:
    """The search's one pass per table it reads beside runs and run_status."""

    metrics: _KeyPass
    params: _KeyPass
    tags: _KeyPass
    artifacts: _AnyPass
    inputs: _AnyPass

    @classmethod
    def of(cls, params: dict[str, Any]) -> _Passes:
        return cls(_KeyPass(params, tables.METRIC_SUMMARIES, "m", "metric_keys"),
                   _KeyPass(params, tables.PARAMS.name, "p", "param_keys"),
                   _KeyPass(params, tables.TAGS.name, "t", "tag_keys"),
                   _AnyPass(_ARTIFACT_URIS, "a"), _AnyPass(_INPUTS, "d"))

    def keyed(self, field_kind: Kind) -> tuple[_KeyPass, str]:
        """The pass of a param or tag field and its value expression."""
        if field_kind is Kind.PARAM:
            return self.params, _PARAM_IF_SQL
        return self.tags, _TAG_IF_SQL

    def joins(self, scope: str) -> list[str]:
        passes = (self.metrics, self.params, self.tags, self.artifacts, self.inputs)
        return [j for j in (p.join(scope) for p in passes) if j]


def _clause_sql(i: int, clause: Clause, params: dict[str, Any], passes: _Passes) -> str:
    """One filter clause: a condition on the run's head row or on the columns it adds to
    one of ``passes``."""
    op = _OPS_SQL[clause.op]
    field = clause.field
    v = f"c{i}_v"
    if field.kind is Kind.ATTRIBUTE and field.name == "artifact_uri":
        # A negated operator means that no artifact matches the positive one.
        placeholder, params[v] = _value_param(clause, v, False)
        positive = _POSITIVE.get(clause.op, clause.op)
        matched = passes.artifacts.any(f"c{i}", f"uri {_OPS_SQL[positive]} {placeholder}")
        return f"NOT {matched}" if positive is not clause.op else matched
    if field.kind is Kind.ATTRIBUTE:
        numeric = _ATTRIBUTE_TYPE[field.name] != "String"
        placeholder, params[v] = _value_param(clause, v, numeric)
        column = _ATTRIBUTE_SQL[field.name]
        if numeric:
            column = f"toFloat64({column})"
        return f"{column} {op} {placeholder}"
    if field.kind is Kind.DATASET:
        placeholder, params[v] = _value_param(clause, v, False)
        return passes.inputs.any(f"c{i}", f"{_DATASET_SQL[field.name]} {op} {placeholder}")
    if field.kind is Kind.METRIC:
        placeholder, params[v] = _value_param(clause, v, True)
        has, value = passes.metrics.add(f"c{i}", field.name, _METRIC_AGG_IF_SQL[field.agg])
        return f"({has} AND {value} {op} {placeholder})"
    key_pass, value_sql = passes.keyed(field.kind)
    if clause.op in (Op.IS_NULL, Op.IS_NOT_NULL):
        # MLflow: IS NULL = the run has no such key, IS NOT NULL = it has one. Any version
        # of the key says the run has it (keys are never removed).
        has, _ = key_pass.add(f"c{i}", field.name, value_sql)
        return f"{'NOT ' if clause.op is Op.IS_NULL else ''}ifNull({has}, 0)"
    # params (compared as numbers where the value is one) and tags
    numeric = field.kind is Kind.PARAM and clause.numeric
    placeholder, params[v] = _value_param(clause, v, numeric)
    has, value = key_pass.add(f"c{i}", field.name, value_sql)
    if numeric:
        value = f"toFloat64OrNull({value})"
    return f"({has} AND {value} {op} {placeholder})"


def _order_sql(j: int, item: OrderBy, passes: _Passes) -> list[tuple[str, str]]:
    """[(expression, ClickHouse type)] for one order-by item; expressions may be NULL."""
    field = item.field
    if field.kind is Kind.ATTRIBUTE:
        return [(_ATTRIBUTE_SQL[field.name], _ATTRIBUTE_TYPE[field.name])]
    if field.kind is Kind.DATASET:
        raise InvalidArgumentError("order_by on datasets.* is not supported")
    if field.kind is Kind.METRIC:
        has, value = passes.metrics.add(f"o{j}", field.name, _METRIC_AGG_IF_SQL[field.agg])
        # NaN sorts after every number and before runs without the metric (MLflow).
        return [(f"if({has}, {value}, NULL)", "Float64")]
    key_pass, value_sql = passes.keyed(field.kind)
    has, value = key_pass.add(f"o{j}", field.name, value_sql)
    text = f"if({has}, {value}, NULL)"
    if field.kind is Kind.PARAM:
        # Numbers first, in numeric order; then text in text order.
        return [(f"toFloat64OrNull({text})", "Float64"), (text, "String")]
    return [(text, "String")]


_ZERO = {"Float64": "0", "String": "''", "Int64": "0", "UInt32": "0"}


def compile_search(
    experiments: Sequence[str],
    clauses: Sequence[Clause],
    order_by: Sequence[OrderBy],
    after: Sequence[Any] | None,
    limit: int,
    *,
    view: str = "ACTIVE_ONLY",
    scoped: bool = True,
) -> CompiledSearch:
    """The SearchRuns SQL and its parameters (pure). ``after``: keyset values of the last
    row served, as :attr:`CompiledSearch.keyset` lists them. ``view``: "ACTIVE_ONLY"
    (archived runs left out), "ARCHIVED_ONLY" or "ALL" (InvalidArgumentError else).
    ``scoped``: each subquery reads the rows of ``experiments`` (their experiment column,
    through the tables' projections) and finds the rows written before that column existed
    through run_experiments (:data:`SCOPE`); unscoped, it keeps every such older row instead
    (:data:`PREFILTER`), which pays when the experiments are most of the store (the
    repository decides). The rows are the same either way.

    A run's status is rank 0's latest status row, which is its latest attempt's: every
    start writes a RUNNING row, so the latest row is at or after the latest start. (Not
    checked here, to keep the search one pass over run_status: a row of an earlier
    attempt stamped after the latest start, from a clock running ahead, shows until the
    new attempt's rank 0 reports again; GetRun assigns rows by producer and is exact.)"""
    if view not in VIEW_WHERE:
        raise InvalidArgumentError(f"view {view!r} is not one of {', '.join(VIEW_WHERE)}")
    params: dict[str, Any] = {"limit": limit, "terminal": sorted(status.ENDED_OR_CRASHED),
                              "unspecified": status.UNSPECIFIED}
    passes = _Passes.of(params)
    attributes = {c.field.name for c in clauses if c.field.kind is Kind.ATTRIBUTE}
    attributes |= {o.field.name for o in order_by if o.field.kind is Kind.ATTRIBUTE}
    if "user_id" in attributes:
        # First in the tags pass, so that its columns are u_* (_ATTRIBUTE_SQL) even when a
        # clause names the same tag.
        passes.tags.add("u", USER_TAG, _TAG_IF_SQL)
    narrowed = bool(experiments) and scoped
    scope = f" AND {SCOPE if scoped else PREFILTER}" if experiments else ""
    where = [_clause_sql(i, c, params, passes) for i, c in enumerate(clauses)]
    if VIEW_WHERE[view]:
        where.insert(0, VIEW_WHERE[view])
    sort_cols: list[str] = []
    keyset: list[SortColumn] = []
    for j, item in enumerate(order_by):
        for m, (expr, ch_type) in enumerate(_order_sql(j, item, passes)):
            # Nulls (runs without the field) sort last in either direction, NaN just before.
            rank = f"isNull({expr})" if ch_type != "Float64" else \
                f"if(isNull({expr}), 2, toUInt8(isNaN(assumeNotNull({expr}))))"
            sort_cols.append(f"{rank} AS s{j}_{m}_n")
            # NaN never equals itself, so the keyset holds 0 for it (its rank tells).
            value = f"if(isNaN({expr}), NULL, {expr})" if ch_type == "Float64" else expr
            sort_cols.append(f"ifNull({value}, {_ZERO[ch_type]}) AS s{j}_{m}_v")
            keyset.append(SortColumn(f"s{j}_{m}_n", "UInt8", False))
            keyset.append(SortColumn(f"s{j}_{m}_v", ch_type, item.descending))
    keyset.append(SortColumn("start_ms", "Int64", True))
    keyset.append(SortColumn("run_id", "String", False))
    if after is not None:
        if len(after) != len(keyset):
            raise InvalidArgumentError("page_token does not match this request's order_by")
        ors = []
        for idx, col in enumerate(keyset):
            value = after[idx]
            if (col.ch_type == "String") != isinstance(value, str) or (
                col.ch_type in ("UInt8", "UInt32", "Int64") and not isinstance(value, int)
            ):
                raise InvalidArgumentError(
                    "page_token is malformed; pass a token from a previous response"
                )
            params[f"a{idx}"] = value
            terms = [f"{c.alias} = {{a{i}:{c.ch_type}}}" for i, c in enumerate(keyset[:idx])]
            terms.append(f"{col.alias} {'<' if col.descending else '>'} {{a{idx}:{col.ch_type}}}")
            ors.append("(" + " AND ".join(terms) + ")")
        where.append("(" + " OR ".join(ors) + ")")
    if experiments:
        params["experiments"] = list(experiments)
    if any(o.field.kind is Kind.ATTRIBUTE and o.field.name == "artifact_uri" for o in order_by):
        passes.artifacts.column("min(uri) AS v")
    archived_join = (fill(_ARCHIVED_JOIN, runs=ANNOTATED_RUNS if narrowed else "")
                     if VIEW_WHERE[view] else "")
    sql = fill(
        _SEARCH_BASE,
        rank_newest=RANK_NEWEST_KEY,
        ts_seq=TS_SEQ_KEY,
        sort_cols="".join(",\n    " + c for c in sort_cols),
        # runs always had its experiment: no older rows to find through the scope.
        experiment_where=_EXPERIMENT_WHERE if experiments else "",
        scope=scope,
        joins="".join(passes.joins(scope)) + archived_join,
        where="".join(f"\n    AND {w}" for w in where),
        settings="" if narrowed else _NO_PROJECTIONS,
        order=", ".join(f"{c.alias} {'DESC' if c.descending else 'ASC'}" for c in keyset),
    )
    return CompiledSearch(sql, params, tuple(keyset))


def keyset_value(value: Any) -> int | float | str:
    """A keyset value as a page token keeps it (JSON): a number (bool as int), else text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return str(value)
