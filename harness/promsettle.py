"""Before a drill's PromQL objectives are judged: wait until each Prometheus asked holds what its targets
exposed up to the window's end.

A range query ending at the window's end answers at once, but a value at a step after the last sample
ingested is the lookback's last value from before it (the killed pod's errors a scrape, or a federation
hop, away), so judging then would pass a window whose last seconds were never seen. A Prometheus holds its
data up to a moment once every target it scrapes was scraped after it: the oldest `timestamp(up)` (one
instant query, as Thanos or Mimir answer it too). The fleet-wide Prometheus may federate the clusters', so
it waits for theirs first, then for its own scrapes after they had it. A cluster's Prometheus that does
not answer (a lost cluster's) is passed over: its data cannot reach the fleet-wide one any more.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from harness.prometheus import FLEET, PrometheusClient, PrometheusError, Prometheuses

SETTLE_DEADLINE_S = 120.0
"""How long after the window a Prometheus may take to scrape every target once more (the longest scrape
interval users set is a minute or two)."""
POLL_S = 0.5
OLDEST_SCRAPE = "bottomk(1, timestamp(up))"
"""The target scraped longest ago, with its last scrape time (unix seconds)."""


def settle(
    clients: Prometheuses,
    wheres: Iterable[str],
    clusters: Iterable[str],
    end: float,
    deadline_s: float = SETTLE_DEADLINE_S,
) -> dict[str, str]:
    """Wait until each Prometheus in `wheres` (cluster names or FLEET) scraped every target after `end`
    (unix time); with FLEET, the Prometheus of every one of `clusters` first. Why not, per Prometheus that
    did not within deadline_s (or did not answer)."""
    wheres, until = set(wheres), time.monotonic() + deadline_s
    own = [c for c in clusters if c in wheres or FLEET in wheres]
    problems: dict[str, str] = {}
    since = end
    for cluster in own:
        settled = _scraped_after(clients.get(cluster), end, until, deadline_s)
        if isinstance(settled, str) and cluster in wheres:
            problems[cluster] = settled
        elif not isinstance(settled, str):
            since = max(since, settled)
    if FLEET in wheres:
        settled = _scraped_after(clients.get(FLEET), since, until, deadline_s)
        if isinstance(settled, str):
            problems[FLEET] = settled
    return problems


def _scraped_after(client: PrometheusClient, moment: float, until: float, allowed_s: float) -> float | str:
    """The wall time once every target of the client's Prometheus was scraped after `moment`, or why not by
    `until` (monotonic, allowed_s from the start)."""
    while True:
        try:
            oldest = client.query(OLDEST_SCRAPE)
        except PrometheusError as error:
            return str(error)
        points = [(s.labels, s.points[-1][1]) for s in oldest if s.points]
        if points and points[0][1] >= moment:
            return time.time()
        if time.monotonic() >= until:
            if not points:
                return f"Prometheus {client.where} scrapes no target (no `up` series): nothing shows its data"
            labels, last = points[0]
            target = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            return (
                f"Prometheus {client.where} had not scraped every target since the window's end within"
                f" {allowed_s:g} s: {{{target}}} last at {moment - last:.1f} s before it"
            )
        time.sleep(POLL_S)
