"""The GSLB's overflow strategy (ours; k8gb has none): the primary serves until its requests in flight reach
its ready endpoints x capacityPerEndpoint, then the excess goes to the next healthy cluster; when all are
full, to the least loaded for its capacity; a cluster without ready endpoints has no capacity. Requests go
through the real proxy path to two small HTTP servers that hold every request until released."""

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import pytest

from harness.localfleet.gslb import Backend, Gslb, overflow_pick
from harness.localfleet.ingress import Request, Response, header, serve


def gslb_object(strategy: dict) -> dict:
    rule = {"host": "web.fleet.local", "http": {"paths": [{"backend": {"service": {"name": "web"}}}]}}
    metadata = {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"}
    return {"metadata": metadata, "spec": {"ingress": {"rules": [rule]}, "strategy": strategy}}


OVERFLOW = {"type": "overflow", "primaryGeoTag": "east", "capacityPerEndpoint": 1}


def args() -> argparse.Namespace:
    names = {"namespace": "web", "name": "web", "service": "web"}
    return argparse.Namespace(contexts=["west", "east"], ground_truth=None, dns_zone_file=None, **names)


async def with_fleet(strategy: dict, ready: dict[str, int], body: Callable[..., Awaitable[None]]) -> None:
    """Two held backends (west first in --backends order, east the primary), a Gslb over them with
    `strategy` and `ready` endpoints per cluster; then body(gslb, send, release)."""
    release = asyncio.Event()

    def held(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            await release.wait()
            return Response(200, "OK", [("X-Served-By", f"{name}/pod")], b"ok")

        return handle

    servers = {name: await serve(held(name), ("127.0.0.1", 0)) for name in ("west", "east")}
    backends = [Backend(n, n, servers[n].sockets[0].getsockname()[:2], healthy=True) for n in servers]
    gslb = Gslb(args(), backends)
    for cluster, count in ready.items():
        gslb._ready(cluster, count)
    gslb._view("east", gslb_object(strategy), True, "")

    async def send() -> asyncio.Task:
        task = asyncio.create_task(gslb._route(Request("GET", "/", [("Host", "web")], b"", "test")))
        await asyncio.sleep(0)  # the request is routed (in flight) before the next one is
        return task

    try:
        await body(gslb, send, release)
    finally:
        release.set()
        for server in servers.values():
            server.close()


def served_by(responses: list[Response]) -> list[str]:
    return [(header(r.headers, "x-served-by") or f"HTTP {r.status}").split("/")[0] for r in responses]


def test_the_primary_serves_until_full_then_the_excess_spills_and_returns() -> None:
    async def body(gslb: Gslb, send: Callable, release: asyncio.Event) -> None:
        assert gslb.serving == ["east", "west"], "primary first, then failover order"
        assert gslb._published() == ["east"], "DNS and the status name only the primary"
        tasks = [await send() for _ in range(4)]
        in_flight = {b.name: b.in_flight for b in gslb.backends}
        assert in_flight == {"east": 3, "west": 1}, "east holds 2, west 1, then both full: east (tie)"
        release.set()
        assert served_by(await asyncio.gather(*tasks)) == ["east", "east", "west", "east"]
        assert {b.name: b.in_flight for b in gslb.backends} == {"east": 0, "west": 0}
        assert served_by([await (await send())]) == ["east"], "the load gone, the primary serves again"

    asyncio.run(with_fleet(OVERFLOW, {"east": 2, "west": 1}, body))


def test_a_primary_without_ready_endpoints_has_no_capacity() -> None:
    async def body(gslb: Gslb, send: Callable, release: asyncio.Event) -> None:
        release.set()
        assert served_by([await (await send()) for _ in range(3)]) == ["west"] * 3

    asyncio.run(with_fleet(OVERFLOW, {"east": 0, "west": 1}, body))


@pytest.mark.parametrize("capacity", [None, 0, -1, "2", True])
def test_overflow_without_a_valid_capacity_serves_nothing_and_says_which_field(capacity: object) -> None:
    strategy = {k: v for k, v in OVERFLOW.items() if k != "capacityPerEndpoint"}
    if capacity is not None:
        strategy["capacityPerEndpoint"] = capacity

    async def body(gslb: Gslb, send: Callable, release: asyncio.Event) -> None:
        assert gslb.serving == []
        response = await (await send())
        assert response.status == 503
        assert b"overflow needs spec.strategy.capacityPerEndpoint, a positive integer" in response.body

    asyncio.run(with_fleet(strategy, {"east": 2, "west": 2}, body))


@pytest.mark.parametrize(
    ("loads", "chosen"),
    [
        ({"east": (0, 2), "west": (0, 2)}, "east"),  # room in the primary
        ({"east": (4, 2), "west": (0, 2)}, "west"),  # primary full (2 x 2 in flight)
        ({"east": (5, 2), "west": (2, 1)}, "west"),  # both full: 5/4 against 2/2
        ({"east": (4, 2), "west": (3, 1)}, "east"),  # both full: 4/4 against 3/2
        ({"east": (0, 0), "west": (9, 0)}, "east"),  # no capacity anywhere: the first
    ],
)
def test_the_pick_is_the_first_with_room_else_the_least_loaded(
    loads: dict[str, tuple[int, int]], chosen: str
) -> None:
    order = [Backend(n, n, ("127.0.0.1", 1), True, in_flight=f, ready=r) for n, (f, r) in loads.items()]
    assert overflow_pick(order, 2).name == chosen
