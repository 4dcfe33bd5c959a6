"""Replication positions for the ground truth: every cluster's sample app asked for its /status through
the cluster's ingress each interval; a change of any cluster's role, epoch, position or fencing is an
event. A cluster that does not answer is left out of that event (its absence is a fact too)."""

import asyncio
import json
from collections.abc import Callable

from harness.localfleet.ingress import Address, Pool, Request

KEPT = ("role", "epoch", "position", "fenced")


async def _status(pool: Pool, address: Address, timeout: float) -> dict | None:
    """The app's role, epoch, position and fencing behind this ingress; None when it does not answer."""
    request = Request("GET", "/status", [("Host", f"{address[0]}:{address[1]}")], b"", "ground-truth")
    try:
        async with asyncio.timeout(timeout):
            response = await pool.send(address, request)
        status = json.loads(response.body) if response.status == 200 else None
    except Exception:
        return None
    return {key: status.get(key) for key in KEPT} if isinstance(status, dict) else None


async def watch_positions(
    clusters: dict[str, Address], interval: float, timeout: float, on_change: Callable[[dict], None]
) -> None:
    """Poll every cluster each interval, concurrently; call on_change({cluster: status}) on a change."""
    loop, pool, last = asyncio.get_running_loop(), Pool(), None
    while True:
        started = loop.time()
        views = await asyncio.gather(*(_status(pool, address, timeout) for address in clusters.values()))
        positions = {name: view for name, view in zip(clusters, views, strict=True) if view is not None}
        if positions != last:
            on_change(positions)
            last = positions
        await asyncio.sleep(max(0.0, started + interval - loop.time()))
