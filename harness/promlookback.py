"""How far back a PromQL query's value at a moment t reads, in seconds: `rate(x[15s])` at t counts the samples
in (t - 15 s, t], so its values measure a drill window alone only from 15 s into it.

From the query's syntax tree (promql-parser: Prometheus' grammar and type rules): a range selector reads
its range back, a subquery its range plus what its expression reads, an offset its duration more (a
negative one less); the query reads as far back as its furthest path. An instant selector's value is its
last sample (Prometheus looks up to 5 minutes back for it), the current state rather than a history: 0.
"""

from __future__ import annotations

from datetime import timedelta

import promql_parser as promql


class LookbackError(ValueError):
    """The query does not parse as PromQL; the parser's reason."""


def lookback(query: str) -> float:
    """The seconds before t that the query's value at t reads samples from."""
    try:
        expression = promql.parse(query)
    except ValueError as error:
        raise LookbackError(str(error)) from None
    return max(0.0, _reads_back(expression))


def _reads_back(node: promql.Expr) -> float:
    match node:
        case promql.MatrixSelector():
            return node.range.total_seconds() + _seconds(node.vector_selector.offset)
        case promql.VectorSelector():
            return _seconds(node.offset)
        case promql.SubqueryExpr():
            return node.range.total_seconds() + _seconds(node.offset) + _reads_back(node.expr)
        case promql.Call():
            return max((_reads_back(arg) for arg in node.args), default=0.0)
        case promql.AggregateExpr():
            return max(_reads_back(node.expr), _reads_back(node.param) if node.param is not None else 0.0)
        case promql.BinaryExpr():
            return max(_reads_back(node.lhs), _reads_back(node.rhs))
        case promql.ParenExpr() | promql.UnaryExpr():
            return _reads_back(node.expr)
    return 0.0  # a number or string literal


def _seconds(offset: timedelta | None) -> float:
    return offset.total_seconds() if offset is not None else 0.0
