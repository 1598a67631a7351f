"""SearchRuns as SQL: a parsed filter and order-by compiled into one query (pure, thread-safe).

Every name and value of the filter is a bound parameter (``{c<i>_k:String}``, ...); the
SQL text is assembled only from the constants below, chosen by the AST's enums, and from
placeholder names generated from clause indexes, never from input. (That is why S608 is
silenced on those f-strings.) The query reads ``runs`` (a run's head row: lowest rank,
newest), rank 0's latest status in the run's latest attempt from ``run_status``, one
pass over ``metric_summaries`` for every metric the filter and the order-by name, and
``annotations`` for the archived runs it leaves out (or keeps: :data:`VIEW_WHERE`).

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
_ATTRIBUTE_SQL: Mapping[str, str] = {
    "run_id": "r.run_id", "experiment": "r.run_experiment", "name": "r.run_name",
    # A run that has not ended has no end time (MLflow: None), so no comparison matches.
    "status": "run_status", "start_ms": "r.start_ms", "end_ms": "nullIf(run_end_ms, 0)",
    "world_size": "r.run_world_size", "user_id": "ifNull(u.v, '')",
    # Only for order_by: a filter on artifact_uri tests each artifact (_artifact_sql).
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
_TAG_VALUE = "argMax(value, ver)"
_USER_JOIN = """
LEFT JOIN (SELECT run_id, $tag AS v FROM tags WHERE key = {user_tag:String}$scope
    GROUP BY run_id) AS u ON u.run_id = r.run_id"""
# Each artifact (run, name, rank) at its latest version, as ReplacingMergeTree(ts_ms) keeps.
_ARTIFACT_URIS = """(SELECT run_id, argMax(uri, ts_ms) AS uri FROM artifacts WHERE 1$scope
    GROUP BY run_id, name, rank)"""
_ARTIFACT_JOIN = """
LEFT JOIN (SELECT run_id, min(uri) AS v FROM $uris GROUP BY run_id) AS a
    ON a.run_id = r.run_id"""
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
SCOPE = ("(experiment IN {experiments:Array(String)} OR experiment = '' AND run_id IN"
         " (SELECT run_id FROM run_experiments WHERE experiment IN {experiments:Array(String)}))")
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
#: SearchRunsRequest.view (its value names) -> the condition on the run, chosen by code.
VIEW_WHERE: Mapping[str, str] = {
    "ACTIVE_ONLY": f"r.run_id NOT IN ({ARCHIVED_RUNS})",
    "ARCHIVED_ONLY": f"r.run_id IN ({ARCHIVED_RUNS})",
    "ALL": "",
}
# Every metric the filter and the order_by name, read in one pass over metric_summaries:
# reading the argMax states costs far more than merging them, and each pass reads the
# states of every key (keys interleave within a run's rows).
_METRICS_JOIN = """
LEFT JOIN (
    SELECT run_id$columns
    FROM metric_summaries
    WHERE key IN {metric_keys:Array(String)}$scope
    GROUP BY run_id
) AS m ON m.run_id = r.run_id"""


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


class _MetricColumns:
    """The columns of the one metric_summaries join: (has, value) per (key, aggregate)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self.columns: list[str] = []
        self.keys: list[str] = []

    def add(self, name: str, key: str, agg: Agg) -> tuple[str, str]:
        """(has-the-key, aggregate) expressions, NULL for a run without metrics; ``name``
        is the placeholder prefix (``c0``, ``o1``)."""
        k = f"{name}_k"
        self._params[k] = key
        self.keys.append(key)
        placeholder = f"{{{k}:String}}"
        self.columns.append(f"countIf(key = {placeholder}) > 0 AS {name}_has")
        self.columns.append(f"{fill(_METRIC_AGG_IF_SQL[agg], k=placeholder)} AS {name}_m")
        return f"m.{name}_has", f"m.{name}_m"


def _clause_sql(
    i: int, clause: Clause, params: dict[str, Any], metrics: _MetricColumns, scope: str
) -> str:
    """One filter clause; ``scope`` (" AND run_id IN (...)" or "") restricts its subquery."""
    op = _OPS_SQL[clause.op]
    field = clause.field
    k, v = f"c{i}_k", f"c{i}_v"
    if field.kind is Kind.ATTRIBUTE and field.name == "artifact_uri":
        placeholder, params[v] = _value_param(clause, v, False)
        positive = _POSITIVE.get(clause.op, clause.op)
        match = "NOT IN" if positive is not clause.op else "IN"
        return (f"r.run_id {match} (SELECT run_id FROM"  # noqa: S608
                f" {fill(_ARTIFACT_URIS, scope=scope)}"
                f" WHERE uri {_OPS_SQL[positive]} {placeholder})")
    if field.kind is Kind.ATTRIBUTE:
        numeric = _ATTRIBUTE_TYPE[field.name] != "String"
        placeholder, params[v] = _value_param(clause, v, numeric)
        column = _ATTRIBUTE_SQL[field.name]
        if numeric:
            column = f"toFloat64({column})"
        return f"{column} {op} {placeholder}"
    if field.kind is Kind.DATASET:
        placeholder, params[v] = _value_param(clause, v, False)
        column = _DATASET_SQL[field.name]
        return (f"r.run_id IN (SELECT run_id FROM {fill(_INPUTS, scope=scope)}"  # noqa: S608
                f" WHERE {column} {op} {placeholder})")
    if field.kind is Kind.METRIC:
        placeholder, params[v] = _value_param(clause, v, True)
        has, value = metrics.add(f"c{i}", field.name, field.agg)
        return f"({has} AND {value} {op} {placeholder})"
    params[k] = field.name
    table = tables.PARAMS.name if field.kind is Kind.PARAM else tables.TAGS.name
    if clause.op in (Op.IS_NULL, Op.IS_NOT_NULL):
        # MLflow: IS NULL = the run has no such key, IS NOT NULL = it has one.
        match = "NOT IN" if clause.op is Op.IS_NULL else "IN"
        # Any version of the key says the run has it (keys are never removed).
        return (f"r.run_id {match} (SELECT run_id FROM {table}"  # noqa: S608
                f" WHERE key = {{{k}:String}}{scope})")
    if field.kind is Kind.PARAM:
        placeholder, params[v] = _value_param(clause, v, clause.numeric)
        # The param's value: the first logged by the lowest rank (params are immutable; the
        # earliest row is the one FINAL would keep, so no FINAL is needed).
        first = f"argMin(value, {PARAM_FIRST_KEY})"
        value = f"toFloat64OrNull({first})" if clause.numeric else first
        return (f"r.run_id IN (SELECT run_id FROM {tables.PARAMS.name}"  # noqa: S608
                f" WHERE key = {{{k}:String}}{scope}"
                f" GROUP BY run_id HAVING {value} {op} {placeholder})")
    # tags
    placeholder, params[v] = _value_param(clause, v, False)
    return (f"r.run_id IN (SELECT run_id FROM tags WHERE key = {{{k}:String}}{scope}"  # noqa: S608
            f" GROUP BY run_id HAVING {_TAG_VALUE} {op} {placeholder})")


def _order_sql(
    j: int, item: OrderBy, params: dict[str, Any], metrics: _MetricColumns, scope: str
) -> tuple[str, list[tuple[str, str]]]:
    """(join, [(expression, ClickHouse type)]) for one order-by item; expressions may be NULL."""
    field = item.field
    if field.kind is Kind.ATTRIBUTE:
        return "", [(_ATTRIBUTE_SQL[field.name], _ATTRIBUTE_TYPE[field.name])]
    if field.kind is Kind.DATASET:
        raise InvalidArgumentError("order_by on datasets.* is not supported")
    if field.kind is Kind.METRIC:
        has, value = metrics.add(f"o{j}", field.name, field.agg)
        # NaN sorts after every number and before runs without the metric (MLflow).
        return "", [(f"if({has}, {value}, NULL)", "Float64")]
    k = f"o{j}_k"
    params[k] = field.name
    if field.kind is Kind.PARAM:
        join = (f"\nLEFT JOIN (SELECT run_id, argMin(value, {PARAM_FIRST_KEY}) AS v"  # noqa: S608
                f" FROM {tables.PARAMS.name} WHERE key = {{{k}:String}}{scope}"
                f" GROUP BY run_id)"
                f" AS o{j} ON o{j}.run_id = r.run_id")
        # Numbers first, in numeric order; then text in text order.
        return join, [(f"toFloat64OrNull(o{j}.v)", "Float64"), (f"o{j}.v", "String")]
    join = (f"\nLEFT JOIN (SELECT run_id, {_TAG_VALUE} AS v FROM tags"  # noqa: S608
            f" WHERE key = {{{k}:String}}{scope} GROUP BY run_id)"
            f" AS o{j} ON o{j}.run_id = r.run_id")
    return join, [(f"o{j}.v", "String")]


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
    metrics = _MetricColumns(params)
    scope = f" AND {SCOPE if scoped else PREFILTER}" if experiments else ""
    where = [_clause_sql(i, c, params, metrics, scope) for i, c in enumerate(clauses)]
    if VIEW_WHERE[view]:
        where.insert(0, VIEW_WHERE[view])
    joins: list[str] = []
    sort_cols: list[str] = []
    keyset: list[SortColumn] = []
    for j, item in enumerate(order_by):
        join, exprs = _order_sql(j, item, params, metrics, scope)
        joins.append(join)
        for m, (expr, ch_type) in enumerate(exprs):
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
    attributes = {c.field.name for c in clauses if c.field.kind is Kind.ATTRIBUTE}
    attributes |= {o.field.name for o in order_by if o.field.kind is Kind.ATTRIBUTE}
    if "user_id" in attributes:
        params["user_tag"] = USER_TAG
        joins.insert(0, fill(_USER_JOIN, tag=_TAG_VALUE, scope=scope))
    if any(o.field.kind is Kind.ATTRIBUTE and o.field.name == "artifact_uri" for o in order_by):
        joins.insert(0, fill(_ARTIFACT_JOIN, uris=fill(_ARTIFACT_URIS, scope=scope)))
    if metrics.columns:
        params["metric_keys"] = sorted(set(metrics.keys))
        joins.insert(0, fill(_METRICS_JOIN,
                             columns="".join(",\n        " + c for c in metrics.columns),
                             scope=scope))
    sql = fill(
        _SEARCH_BASE,
        rank_newest=RANK_NEWEST_KEY,
        ts_seq=TS_SEQ_KEY,
        sort_cols="".join(",\n    " + c for c in sort_cols),
        # runs always had its experiment: no older rows to find through the scope.
        experiment_where=_EXPERIMENT_WHERE if experiments else "",
        scope=scope,
        joins="".join(joins),
        where="".join(f"\n    AND {w}" for w in where),
        settings="" if experiments and scoped else _NO_PROJECTIONS,
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
