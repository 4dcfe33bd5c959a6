"""CPU cost of the prober: 100 Hz against 10 local endpoints for about 10 s (target: under 25% of one core).

The endpoints are minimal HTTP/1.1 servers in a child process (this script run with --serve N), so their
CPU is not counted; the figure is this process's CPU time over wall time while probing. Prints figures
and the ratio to the target, asserts nothing.

    .venv/bin/python bench/probe_overhead.py [--seconds 10] [--rate 100] [--endpoints 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time

from harness.measure import latency_percentiles
from harness.traffic import Prober

TARGET_CPU_PERCENT = 25.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: bench/%d\r\n\r\nok"


class _Endpoint(asyncio.Protocol):
    """Answers every request head with a fixed 200, keeping the connection open."""

    def __init__(self, index: int) -> None:
        self._index, self._buffer = index, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            self._transport.write(RESPONSE % self._index)  # type: ignore[attr-defined]


async def _serve(count: int) -> None:
    """Serve count endpoints on 127.0.0.1, print their ports, run until stdin closes."""
    loop = asyncio.get_running_loop()
    ports = []
    for i in range(count):
        server = await loop.create_server(lambda i=i: _Endpoint(i), "127.0.0.1", 0)
        ports.append(server.sockets[0].getsockname()[1])
    print(" ".join(map(str, ports)), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


def _bench(seconds: float, rate: float, count: int) -> None:
    argv = [sys.executable, __file__, "--serve", str(count)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as servers:
        assert servers.stdout is not None and servers.stdin is not None
        ports = servers.stdout.readline().split()
        targets = {f"ep{i}": f"http://127.0.0.1:{port}/healthz" for i, port in enumerate(ports)}
        cpu0, wall0 = time.process_time(), time.monotonic()
        with Prober(targets, rate_hz=rate) as probes:
            time.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        servers.stdin.close()
    percent = 100 * cpu / wall
    print(f"prober: {count} endpoints x {rate:g} Hz for {wall:.1f} s (pid {os.getpid()})")
    ratio = percent / TARGET_CPU_PERCENT
    print(f"CPU: {percent:.1f}% of one core; target {TARGET_CPU_PERCENT:g}%: ratio {ratio:.2f}")
    for name in targets:
        samples = probes.samples(name)
        sent = [s.sent for s in samples]
        achieved = (len(sent) - 1) / (max(sent) - min(sent)) if len(sent) > 1 else 0.0
        failed = sum(not s.ok or (s.status or 0) >= 500 for s in samples)
        missed = probes.missed(name)
        late = sum(m.reason == "late" for m in missed)
        gaps = [b - a for a, b in itertools.pairwise(sorted(sent))]
        on_grid = sum(abs(gap - 1 / rate) < 0.5 / rate for gap in gaps) / max(1, len(gaps))
        p = latency_percentiles(samples, (50, 99))
        print(
            f"  {name}: {len(samples)} samples, {achieved:.1f}/s, missed {len(missed)} ({late} late), "
            f"gaps of one interval {on_grid:.0%}, failed {failed}, "
            f"p50 {1000 * (p[50] or 0):.2f} ms, p99 {1000 * (p[99] or 0):.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
    else:
        _bench(args.seconds, args.rate, args.endpoints)


if __name__ == "__main__":
    main()
