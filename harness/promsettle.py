"""Before a drill's PromQL objectives are judged: wait until each Prometheus asked holds every sample
stamped up to the window's end.

A range query ending at the window's end answers at once, but a value at a step after the last sample
ingested is the lookback's last value from before it, so judging too early passes a window whose last
seconds were never seen. Two ways a sample stamped before the end arrives after it:
- a scrape that began before the end and is still running: a target's samples are in once its next
  scrape after its last one (last scrape + interval, less a margin for the scheduler's drift) is due after
  the end;
- federation: the series a Prometheus takes from another's /federate keep their first timestamps, so
  they arrive a scrape later. The fleet-wide Prometheus may federate the clusters', so it waits for
  theirs first, then for a scrape of each /federate target that began after they had the window's data.
Only the targets that answer count (/api/v1/targets, the active ones): a target whose scrape fails (a lost
cluster's) has nothing more to give, and an instant query of `timestamp(up)` would also hold, for five
minutes, the `up` of a target gone without a staleness marker (a pod replaced while its cluster's
Prometheus was down), never scraped again. A cluster's Prometheus that does not answer (a lost cluster's)
is passed over: its data cannot reach the fleet-wide one any more. A remote-write store without the
targets API declares its ingest_delay instead: the wait is that long past the window.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from harness.prometheus import FLEET, PrometheusClient, PrometheusError, Prometheuses, Target

SETTLE_DEADLINE_S = 120.0
"""How long after the window a Prometheus may take to scrape every target once more (the longest scrape
interval users set is a minute or two)."""
POLL_S = 0.2
"""How often the targets are read; a late read of a cluster's also delays the fleet-wide wait, which needs a
federation begun after the clusters held the window's data."""
DRIFT_S = 1.0
"""How late after its due time a scrape may begin (the scheduler's drift); at most half the interval."""


def settle(
    clients: Prometheuses,
    wheres: Iterable[str],
    clusters: Iterable[str],
    end: float,
    deadline_s: float = SETTLE_DEADLINE_S,
) -> dict[str, str]:
    """Wait until each Prometheus in `wheres` (cluster names or FLEET) holds every sample stamped up to
    `end` (unix time); with FLEET, the Prometheus of every one of `clusters` first. Why not, per
    Prometheus that did not within deadline_s (or did not answer)."""
    wheres, until = set(wheres), time.monotonic() + deadline_s
    own = [c for c in clusters if c in wheres or FLEET in wheres]
    problems, since = {}, end
    servers = [clients.get(c) for c in own]
    with ThreadPoolExecutor(max(len(own), 1)) as pool:  # a lost cluster's answers only by its timeout
        settled_at = pool.map(lambda server: _scraped_after(server, end, end, until, deadline_s), servers)
        for cluster, settled in zip(own, settled_at, strict=True):
            if isinstance(settled, str) and cluster in wheres:
                problems[cluster] = settled
            elif not isinstance(settled, str):
                since = max(since, settled)
    if FLEET in wheres:
        settled = _scraped_after(clients.get(FLEET), end, since, until, deadline_s)
        if isinstance(settled, str):
            problems[FLEET] = settled
    return problems


def _scraped_after(
    client: PrometheusClient, end: float, federated: float, until: float, allowed_s: float
) -> float | str:
    """The wall time once the client's Prometheus holds every sample its targets stamped up to `end`, and
    each /federate target began a scrape after `federated`; or why not by `until` (monotonic, allowed_s
    from the start)."""
    delay = client.settings.ingest_delay
    if delay is not None:  # the store's own bound: no targets to read
        time.sleep(max(0.0, federated + delay - time.time()))
        return time.time()
    while True:
        try:
            targets = client.targets()
        except PrometheusError as error:
            return unreadable(error)
        behind = [t for t in targets if _behind(t, end, federated)]
        if not behind:
            return time.time()
        if time.monotonic() >= until:
            oldest = min(behind, key=lambda t: t.last_scrape)
            offset = oldest.last_scrape - end
            when = f"{-offset:.1f} s before" if offset < 0 else f"{offset:.1f} s after"
            return (
                f"Prometheus {client.where} did not hold the window's data within {allowed_s:g} s:"
                f" {oldest.describe()} last scraped {when} the window's end"
            )
        time.sleep(POLL_S)


def unreadable(error: PrometheusError) -> str:
    """Why a server's targets could not be read; a server without the targets API is told what to set."""
    if error.status != 404:
        return str(error)
    store = "a store without the targets API (Mimir, Amazon Managed Prometheus)"
    return f"{error}: {store} needs its ingest_delay set"


def _behind(target: Target, end: float, federated: float) -> bool:
    """Whether a target that answers may still owe samples stamped up to `end`."""
    if target.health != "up":
        return False
    if urllib.parse.urlsplit(target.scrape_url).path.endswith("/federate"):
        return target.last_scrape <= federated
    if target.interval is None:
        return target.last_scrape <= end
    return target.last_scrape + target.interval <= end + min(DRIFT_S, target.interval / 2)
