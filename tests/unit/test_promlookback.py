"""How far back a PromQL query's value reads: ranges, subqueries and offsets along each path of the
expression; a query that does not parse is named with the parser's reason."""

import pytest

from harness.promlookback import LookbackError, lookback


@pytest.mark.parametrize(
    ("query", "reads_back"),
    [
        ('drill_error_ratio{app="calm"}', 0.0),
        ("rate(x[15s])", 15.0),
        ('max(sum by (cluster) (rate(a{s=~"5.."}[15s])) / sum by (cluster) (rate(a[30s])))', 30.0),
        ('histogram_quantile(0.99, sum by (le) (rate(b{n="o"}[1m])))', 60.0),
        ("sum(rate(x[1m])) by (le)", 60.0),
        ("max_over_time(rate(x[1m])[5m:30s])", 360.0),
        ("(rate(x[1m]))[5m:]", 360.0),
        ("max_over_time(rate(x[1m] offset 2m)[5m:30s] offset 1m)", 540.0),
        ("rate(x[1m] offset 5m) / rate(y[2m])", 360.0),
        ("x offset 1h30m", 5400.0),
        ("x offset -5m", 0.0),
        ("rate(x[10m] offset -5m)", 300.0),
        ("a / on(x) group_left(y) rate(b[2m])", 120.0),
        ("topk(3, -rate(x[90]))", 90.0),
        ('x{re=~"[5m]", offset="1h"} # rate(x[1h])\n', 0.0),
    ],
)
def test_a_query_reads_back_as_far_as_its_furthest_path(query: str, reads_back: float) -> None:
    assert lookback(query) == reads_back


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("rate(x[1m]", "unclosed left parenthesis"),
        ("rate(x[15q])", "bad number or duration syntax: 15q"),
        ("rate(x)", "expected type matrix in call to function 'rate', got vector"),
    ],
)
def test_a_query_that_does_not_parse_is_named_with_the_parsers_reason(query: str, why: str) -> None:
    with pytest.raises(LookbackError) as raised:
        lookback(query)
    assert str(raised.value) == why
