"""The SearchRuns filter and order-by grammar: text in, a typed AST out (pure, thread-safe).

The grammar is MLflow's search syntax (``mlflow/utils/search_utils.py``, including
``IS NULL``), with ``min(...)``/``max(...)`` of metrics, ``IN`` everywhere and typed
params as extensions::

    filter     := clause ("AND" clause)*            (empty text = no filter)
    clause     := field op value | field ["NOT"] "IN" "(" value ("," value)* ")"
                  | field "IS" ["NOT"] "NULL"       (tags and params only, as in MLflow)
    field      := [("min"|"max") "("] kind "." name [")"] | attribute_name
    kind       := "metrics" | "params" | "tags" | "attributes" | "datasets", or `backquoted`
                  (aliases: metric, param, parameter, parameters, tag, attribute, attr,
                  run, dataset)
    name       := identifier ("." identifier)* | `backquoted` | "double quoted"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=" | "LIKE" | "ILIKE"
                  | "NOT LIKE" | "NOT ILIKE"
    value      := 'single quoted' | "double quoted" | number    (quotes doubled or \\-escaped)
    order_by   := field ["ASC" | "DESC"]

A bare name (``status = 'FAILED'``, ``start_time DESC``) is an attribute, as in MLflow.
Keywords, kinds and attribute names are case-insensitive. There is no ``OR`` (MLflow has
none either). Every error raises :class:`FilterError` (an ``InvalidArgumentError``) whose
message names the offending token and its 0-based character position, so the gRPC answer
is ``INVALID_ARGUMENT: ... at position 17``.

Semantics (compiled to SQL by :mod:`runstream.query.search_sql`; names and values are bound
parameters):

* ``metrics.k`` is the run's latest value of ``k`` (highest step over all ranks);
  ``min(metrics.k)`` / ``max(metrics.k)`` the extremes. Metric values must be numbers.
* ``params.k``: the lowest rank's value. A number literal, or any ``<``/``<=``/``>``/``>=``
  whose value reads as a number, compares numerically (params that do not parse as
  numbers never match); a quoted value with ``=``/``!=``/``LIKE``/``IN`` compares text.
* ``tags.k``: text. A clause on a param or tag matches only runs that have that key;
  ``IS NULL`` matches the runs without it, ``IS NOT NULL`` those with it.
* ``attributes.*``: ``run_id``, ``experiment`` (``experiment_id``), ``run_name`` (``name``,
  ``run name``), ``status`` (rank 0's latest), ``user_id`` (the ``mlflow.user`` tag, ''
  without one), ``artifact_uri`` (any of the run's artifact URIs; negated operators:
  none of them) as text; ``start_time`` (``start_ms``, ``created``), ``end_time``
  (``end_ms``; no value until the run ends, so it never matches before) and
  ``world_size`` as numbers.
* ``datasets.name``/``digest``/``uri``/``role`` (``context``): the run has at least one
  input that matches.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from runstream.proto.errors import InvalidArgumentError
from runstream.proto.validation import MAX_KEY_LEN

#: Limits, documented in query.proto.
MAX_FILTER_LEN = 4096
MAX_CLAUSES = 32
MAX_IN_VALUES = 1000
MAX_ORDER_BY = 3
MAX_STRING_LEN = 6000


class FilterError(InvalidArgumentError):
    """A filter or order-by that does not parse; the message names the token position."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        where = f" at position {position}"
        if text:
            where += f" (near {text[:40]!r})"
        super().__init__(message + where)
        self.position = position


class Kind(enum.Enum):
    METRIC = "metrics"
    PARAM = "params"
    TAG = "tags"
    ATTRIBUTE = "attributes"
    DATASET = "datasets"


class Agg(enum.Enum):
    """How a metric clause reads the series: its latest value, or its min or max."""

    LATEST = "latest"
    MIN = "min"
    MAX = "max"


class Op(enum.Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    LIKE = "LIKE"
    ILIKE = "ILIKE"
    NOT_LIKE = "NOT LIKE"
    NOT_ILIKE = "NOT ILIKE"
    IN = "IN"
    NOT_IN = "NOT IN"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"


ORDERING_OPS = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})
PATTERN_OPS = frozenset({Op.LIKE, Op.ILIKE, Op.NOT_LIKE, Op.NOT_ILIKE})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
#: Take no value; MLflow allows them on tags and params only (a run has the key or not).
NULL_OPS = frozenset({Op.IS_NULL, Op.IS_NOT_NULL})
NUMERIC_OPS = frozenset({Op.EQ, Op.NE, *ORDERING_OPS, *LIST_OPS})
TEXT_OPS = frozenset({Op.EQ, Op.NE, *PATTERN_OPS, *LIST_OPS})

#: attributes.<name> (matched case-insensitively) -> (canonical name, numeric?). MLflow's
#: searchable RunInfo attributes and its aliases ("created", "run name") are all here.
ATTRIBUTES: dict[str, tuple[str, bool]] = {
    "run_id": ("run_id", False),
    "id": ("run_id", False),
    "experiment": ("experiment", False),
    "experiment_id": ("experiment", False),
    "name": ("name", False),
    "run_name": ("name", False),
    "run name": ("name", False),
    "status": ("status", False),
    "start_ms": ("start_ms", True),
    "start_time": ("start_ms", True),
    "created": ("start_ms", True),
    "end_ms": ("end_ms", True),
    "end_time": ("end_ms", True),
    "world_size": ("world_size", True),
    "user_id": ("user_id", False),
    "artifact_uri": ("artifact_uri", False),
}
#: The tag that holds attributes.user_id (MLflow's clients set it; Runstream records no
#: user of its own).
USER_TAG = "mlflow.user"
#: datasets.<name> -> column of the inputs table
DATASET_FIELDS: dict[str, str] = {
    "name": "name", "digest": "digest", "uri": "uri", "role": "role", "context": "role",
}
_KINDS = {
    "metrics": Kind.METRIC, "metric": Kind.METRIC,
    "params": Kind.PARAM, "param": Kind.PARAM, "parameters": Kind.PARAM,
    "parameter": Kind.PARAM,
    "tags": Kind.TAG, "tag": Kind.TAG,
    "attributes": Kind.ATTRIBUTE, "attribute": Kind.ATTRIBUTE, "attr": Kind.ATTRIBUTE,
    "run": Kind.ATTRIBUTE,
    "datasets": Kind.DATASET, "dataset": Kind.DATASET,
}


@dataclass(frozen=True, slots=True)
class Field:
    """What a clause or an order-by reads. ``name`` is canonical for attributes/datasets."""

    kind: Kind
    name: str
    agg: Agg = Agg.LATEST

    @property
    def numeric(self) -> bool:
        """True when the field's values are numbers (metrics, numeric attributes)."""
        if self.kind is Kind.METRIC:
            return True
        return self.kind is Kind.ATTRIBUTE and ATTRIBUTES[self.name][1]

    def __str__(self) -> str:
        text = f"{self.kind.value}.{self.name}"
        return text if self.agg is Agg.LATEST else f"{self.agg.value}({text})"


Value = str | float


@dataclass(frozen=True, slots=True)
class Clause:
    """One comparison. ``values`` has one element unless ``op`` is IN/NOT IN.

    ``numeric`` says how to compare: True means every value is a float and the field is
    read as a number (params parsed with toFloat64OrNull); False means text.
    """

    field: Field
    op: Op
    values: tuple[Value, ...]
    numeric: bool
    position: int


@dataclass(frozen=True, slots=True)
class OrderBy:
    field: Field
    descending: bool


# --- tokenizer -------------------------------------------------------------------------


class T(enum.Enum):
    IDENT = "identifier"
    STRING = "string"
    NUMBER = "number"
    OP = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    DOT = "."
    END = "end of input"


@dataclass(frozen=True, slots=True)
class Token:
    type: T
    text: str  # for STRING: the unescaped value; for IDENT: as written (unquoted)
    position: int
    quoted: bool = False  # IDENT written in backquotes or double quotes
    quote: str = ""  # the quote character of a quoted IDENT


_WS = re.compile(r"\s+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_\-:/]*")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_OPS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">")


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """The unescaped body of a quoted string starting at ``start``, and the index after it."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FilterError("unterminated quoted text", start, text[start:])


def tokenize(text: str) -> list[Token]:
    """The tokens of a filter or order-by; FilterError on any character it cannot read."""
    tokens: list[Token] = []
    i = 0
    prev: Token | None = None
    while i < len(text):
        m = _WS.match(text, i)
        if m:
            i = m.end()
            continue
        ch = text[i]
        tok: Token
        if ch == "'":
            body, end = _quoted(text, i, "'")
            tok = Token(T.STRING, body, i)
        elif ch in '"`':
            body, end = _quoted(text, i, ch)
            # After a dot, a quoted name is an identifier (metrics."val loss"); else a value.
            if ch == "`" or (prev is not None and prev.type is T.DOT):
                tok = Token(T.IDENT, body, i, quoted=True, quote=ch)
            else:
                tok = Token(T.STRING, body, i)
        elif ch in "()":
            tok, end = Token(T.LPAREN if ch == "(" else T.RPAREN, ch, i), i + 1
        elif ch == ",":
            tok, end = Token(T.COMMA, ch, i), i + 1
        elif ch == "." and not (i + 1 < len(text) and text[i + 1].isdigit()
                                and (prev is None or prev.type is not T.IDENT)):
            tok, end = Token(T.DOT, ch, i), i + 1
        elif (m := _NUMBER.match(text, i)) and (ch not in "+-" or prev is None
                                                  or prev.type in (T.OP, T.LPAREN, T.COMMA)):
            tok, end = Token(T.NUMBER, m.group(), i), m.end()
        elif m := _IDENT.match(text, i):
            tok, end = Token(T.IDENT, m.group(), i), m.end()
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise FilterError(f"unexpected character {ch!r}", i)
            tok, end = Token(T.OP, op, i), i + len(op)
        tokens.append(tok)
        prev = tok
        i = end
    tokens.append(Token(T.END, "", len(text)))
    return tokens


# --- parser ----------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.type is not T.END:
            self.i += 1
        return tok

    def keyword(self, *words: str) -> bool:
        tok = self.tok
        return tok.type is T.IDENT and not tok.quoted and tok.text.upper() in words

    def expect(self, type_: T, what: str) -> Token:
        tok = self.tok
        if tok.type is not type_:
            raise self.error(f"expected {what}, found {describe(tok)}")
        return self.next()

    def error(self, message: str, tok: Token | None = None) -> FilterError:
        tok = tok or self.tok
        return FilterError(message, tok.position, tok.text if tok.type is not T.END else "")

    # field := [agg "("] kind "." name [")"]
    def field(self) -> Field:
        start = self.tok
        agg = Agg.LATEST
        if self.keyword("MIN", "MAX") and self.tokens[self.i + 1].type is T.LPAREN:
            agg = Agg(self.next().text.lower())
            self.next()
        head = self.expect(T.IDENT, "a field such as metrics.loss or params.lr")
        # As in MLflow: the kind may be backquoted (`metric`.a), and a bare name is an
        # attribute (start_time DESC, status = 'FAILED').
        if (self.tok.type is not T.DOT and agg is Agg.LATEST and not head.quoted
                and head.text.lower() in ATTRIBUTES):
            return self.check_field(Kind.ATTRIBUTE, head.text, agg, head)
        kind = _KINDS.get(head.text.lower()) if head.quote in ("", "`") else None
        if kind is None:
            raise self.error(
                "unknown field kind; use metrics., params., tags., attributes. or datasets.",
                head,
            )
        self.expect(T.DOT, f"'.' after {head.text!r}")
        name_tok = self.tok
        name = self.name()
        if agg is not Agg.LATEST:
            if kind is not Kind.METRIC:
                raise self.error(f"{agg.value}() applies to metrics only", start)
            self.expect(T.RPAREN, f"')' closing {agg.value}(")
        return self.check_field(kind, name, agg, name_tok)

    def name(self) -> str:
        first = self.expect(T.IDENT, "a name")
        if first.quoted:
            return first.text
        parts = [first.text]
        # Dotted keys (nested params): params.optimizer.lr
        while self.tok.type is T.DOT and self.tokens[self.i + 1].type is T.IDENT \
                and not self.tokens[self.i + 1].quoted:
            self.next()
            parts.append(self.next().text)
        return ".".join(parts)

    def check_field(self, kind: Kind, name: str, agg: Agg, tok: Token) -> Field:
        if kind is Kind.ATTRIBUTE:
            if name.lower() not in ATTRIBUTES:
                raise self.error(
                    f"unknown attribute {name!r}; known: {', '.join(sorted(ATTRIBUTES))}", tok
                )
            return Field(kind, ATTRIBUTES[name.lower()][0])
        if kind is Kind.DATASET:
            if name.lower() not in DATASET_FIELDS:
                raise self.error(
                    f"unknown dataset field {name!r}; known: {', '.join(sorted(DATASET_FIELDS))}",
                    tok,
                )
            return Field(kind, DATASET_FIELDS[name.lower()])
        if not name or len(name) > MAX_KEY_LEN or any(ord(c) < 32 for c in name):
            raise self.error(f"{kind.value} name must be 1..{MAX_KEY_LEN} printable characters",
                             tok)
        return Field(kind, name, agg)

    def op(self) -> Op:
        tok = self.tok
        if tok.type is T.OP:
            self.next()
            return {"==": Op.EQ, "<>": Op.NE}.get(tok.text) or Op(tok.text)
        if self.keyword("LIKE", "ILIKE", "IN"):
            return Op(self.next().text.upper())
        if self.keyword("IS"):
            self.next()
            negated = self.keyword("NOT")
            if negated:
                self.next()
            if not self.keyword("NULL"):
                raise self.error("expected NULL or NOT NULL after IS")
            self.next()
            return Op.IS_NOT_NULL if negated else Op.IS_NULL
        if self.keyword("NOT"):
            self.next()
            if self.keyword("LIKE", "ILIKE", "IN"):
                return Op("NOT " + self.next().text.upper())
            raise self.error("expected LIKE, ILIKE or IN after NOT")
        raise self.error(f"expected a comparison operator, found {describe(tok)}")

    def value(self) -> tuple[Value, bool, Token]:
        """A literal, whether it was a number literal, and its token."""
        tok = self.tok
        if tok.type is T.STRING:
            self.next()
            if len(tok.text) > MAX_STRING_LEN:
                raise self.error(f"quoted value longer than {MAX_STRING_LEN} characters", tok)
            return tok.text, False, tok
        if tok.type is T.NUMBER:
            self.next()
            number = float(tok.text)
            if not math.isfinite(number):
                raise self.error("number out of range", tok)
            return number, True, tok
        raise self.error(f"expected a quoted value or a number, found {describe(tok)}")

    def clause(self) -> Clause:
        start = self.tok
        field = self.field()
        op_tok = self.tok
        op = self.op()
        raw: list[tuple[Value, bool, Token]] = []
        if op in NULL_OPS:
            pass
        elif op in LIST_OPS:
            self.expect(T.LPAREN, f"'(' after {op.value}")
            raw.append(self.value())
            while self.tok.type is T.COMMA:
                self.next()
                raw.append(self.value())
                if len(raw) > MAX_IN_VALUES:
                    raise self.error(f"more than {MAX_IN_VALUES} values in {op.value} (...)")
            self.expect(T.RPAREN, f"',' or ')' in {op.value} (...)")
        else:
            raw.append(self.value())
        return typed_clause(field, op, raw, start.position, op_tok)

    def filter(self) -> tuple[Clause, ...]:
        if self.tok.type is T.END:
            return ()
        clauses = [self.clause()]
        while self.keyword("AND"):
            self.next()
            if len(clauses) >= MAX_CLAUSES:
                raise self.error(f"more than {MAX_CLAUSES} clauses")
            clauses.append(self.clause())
        if self.keyword("OR"):
            raise self.error("OR is not supported (as in MLflow); run two searches instead")
        if self.tok.type is not T.END:
            raise self.error(f"expected AND or the end of the filter, found {describe(self.tok)}")
        return tuple(clauses)

    def order_by(self) -> OrderBy:
        field = self.field()
        descending = False
        if self.keyword("ASC", "DESC"):
            descending = self.next().text.upper() == "DESC"
        if self.tok.type is not T.END:
            raise self.error(f"expected ASC, DESC or the end, found {describe(self.tok)}")
        return OrderBy(field, descending)


def describe(tok: Token) -> str:
    if tok.type is T.END:
        return "the end of the filter"
    return f"{tok.type.value} {tok.text[:40]!r}"


def _as_number(value: Value) -> float | None:
    if isinstance(value, float):
        return value
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def typed_clause(
    field: Field, op: Op, raw: list[tuple[Value, bool, Token]], position: int, op_tok: Token
) -> Clause:
    """Check that ``op`` and the values suit ``field`` and decide text or numeric comparison."""
    if op in NULL_OPS:
        if field.kind not in (Kind.PARAM, Kind.TAG):
            raise FilterError(f"{op.value} applies to tags and params only (as in MLflow)",
                              op_tok.position, op_tok.text)
        return Clause(field, op, (), False, position)
    allowed = NUMERIC_OPS if field.numeric else TEXT_OPS
    if field.kind is Kind.PARAM:
        allowed = NUMERIC_OPS | TEXT_OPS
    if op not in allowed:
        raise FilterError(f"operator {op.value} does not apply to {field}", op_tok.position,
                          op_tok.text)
    if field.numeric:
        values: list[Value] = []
        for value, _, tok in raw:
            number = _as_number(value)
            if number is None:
                raise FilterError(f"{field} compares numbers; {value!r} is not one",
                                  tok.position, tok.text)
            values.append(number)
        return Clause(field, op, tuple(values), True, position)
    if field.kind is Kind.PARAM:
        literal = any(is_number for _, is_number, _ in raw)
        if literal and not all(is_number for _, is_number, _ in raw):
            tok = raw[0][2]
            raise FilterError("mix of numbers and quoted text in one list", tok.position,
                              tok.text)
        if literal and op in PATTERN_OPS:
            tok = raw[0][2]
            raise FilterError(f"{op.value} needs a quoted pattern", tok.position, tok.text)
        numbers = [_as_number(v) for v, _, _ in raw]
        if literal or (op in ORDERING_OPS and numbers[0] is not None):
            return Clause(field, op, tuple(n for n in numbers if n is not None), True, position)
    values = []
    for value, is_number, tok in raw:
        if is_number:
            raise FilterError(f"{field} compares text; quote the value", tok.position, tok.text)
        values.append(value)
    return Clause(field, op, tuple(values), False, position)


def parse_filter(text: str) -> tuple[Clause, ...]:
    """The clauses of a filter ("" or blank = no clauses). Raises FilterError."""
    if len(text) > MAX_FILTER_LEN:
        raise FilterError(f"filter is {len(text)} characters, over the limit of {MAX_FILTER_LEN}",
                          MAX_FILTER_LEN)
    return _Parser(text).filter()


def parse_order_by(items: list[str] | tuple[str, ...]) -> tuple[OrderBy, ...]:
    """Each order-by item ("metrics.acc DESC"); at most MAX_ORDER_BY. Raises FilterError."""
    if len(items) > MAX_ORDER_BY:
        raise FilterError(f"more than {MAX_ORDER_BY} order_by items", 0)
    out = []
    for item in items:
        if len(item) > 1024:
            raise FilterError("order_by item longer than 1024 characters", 1024)
        out.append(_Parser(item).order_by())
    return tuple(out)
