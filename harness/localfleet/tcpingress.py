"""The ingress's TCP pass-through: one port of the cluster's ingress address relayed to the ready endpoints
of one Service, as ingress-nginx's tcp-services ConfigMap does (`"5432": "postgres/postgres:5432"`).

Bytes are copied both ways unchanged, so the protocol, its TLS and its authentication are the server's
end to end. A new connection goes to the next ready endpoint (round robin), to the one after on a failed
connect; a relayed connection stays on its endpoint until either side closes it (a half-close is passed
on). Endpoints come from the Service's EndpointSlices through a list+watch, as the HTTP ingress's.

    python -m harness.localfleet.tcpingress --kubeconfig K --context C --listen ADDR:PORT \
        --namespace NS --service SVC [--port-name NAME]
"""

import argparse
import asyncio
import logging

from harness.localfleet.ingress import (
    CONNECT_TIMEOUT_S,
    ServiceEndpoints,
    log_to_stderr,
    parse_address,
    service_arguments,
    watch_service,
)

CHUNK = 64 * 1024
log = logging.getLogger("tcpingress")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader's end, then half-close the writer's side."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


class Relay(ServiceEndpoints):
    """Connections to the listening port, each relayed to a ready endpoint the reflector last saw."""

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        endpoints, turn = self.endpoints, next(self._turn)
        for i in range(min(2, len(endpoints))):
            address = endpoints[(turn + i) % len(endpoints)]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    return await asyncio.open_connection(*address)
            except (OSError, TimeoutError) as error:
                log.info("connect to %s:%d failed: %s", *address, error or "timed out")
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()


async def run(args: argparse.Namespace) -> None:
    relay = Relay(asyncio.get_running_loop(), f"{args.namespace}/{args.service}", args.port_name)
    watch_service(args, relay.on_slices)
    server = await asyncio.start_server(relay.handle, *parse_address(args.listen), backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    log.info("relaying %s:%d to %s in %s", host, port, relay.service, args.context)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    args = service_arguments("python -m harness.localfleet.tcpingress", __doc__).parse_args(argv)
    log_to_stderr()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
