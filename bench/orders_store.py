"""Benchmark the orders service's write path on its two stores: its own log (fsync per write) and
PostgreSQL (sampleapp_pg; a real server from Debian's package, fsync and synchronous_commit on, on this
machine's loopback). The same client writes N orders one after another through the app's HTTP API; prints
the median and p95 of the acknowledgement latency per store. Asserts nothing.
    python -m bench.orders_store [--writes 500]   (from the repository root: it uses tests/postgres.py)
"""

import argparse
import json
import statistics
import tempfile
import time
import urllib.request

from harness.localfleet.sampleapp import App, Config, Service
from harness.localfleet.sampleapp_pg import PgApp
from tests import postgres


def write_latencies(app: Service, writes: int) -> list[float]:
    url = f"http://127.0.0.1:{app.cfg.listen[1]}/orders"
    took = []
    for seq in range(1, writes + 1):
        body = json.dumps({"seq": seq, "payload": f"order {seq}", "stream": "bench"}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201, response.status
        took.append(time.perf_counter() - started)
    return took


def run(app: Service, writes: int) -> list[float]:
    app.start()
    try:
        return write_latencies(app, writes)
    finally:
        app.close()


def report(name: str, took: list[float]) -> None:
    p95 = statistics.quantiles(took, n=20)[-1]
    print(f"{name:<34} median {statistics.median(took) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {"ORDERS_DATA_DIR": folder, "ORDERS_CLUSTER": "us-east", "ORDERS_ROLE": "primary"}
        own = App(Config.from_env(env | {"ORDERS_LISTEN": f"127.0.0.1:{postgres.free_port()}"}))
        report("own log (fsync)", run(own, args.writes))
    with postgres.servers() as servers:
        data = servers.folder / "bench"
        servers.run("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust")
        server = servers.start(servers.configure(data, postgres.free_port(), "fsync = on"))
        url = f"host={server.sockets} port={server.port} dbname=postgres user=postgres"
        env = {"ORDERS_CLUSTER": "us-east", "ORDERS_DATABASE_URL": url}
        database = PgApp(Config.from_env(env | {"ORDERS_LISTEN": f"127.0.0.1:{postgres.free_port()}"}))
        report("PostgreSQL (fsync, sync commit)", run(database, args.writes))


if __name__ == "__main__":
    main()
