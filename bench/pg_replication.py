"""Benchmark PostgreSQL replication on the local fleet: the time `fleet up --postgres` adds, the
replication lag at idle and under a write load (pgbench, Debian's, at a fixed rate), and the RPO the
active-passive drill measures for a loss of the primary cluster under that load, beside the replication lag
the servers reported at t0.

Lag is measured three ways, from the host through each cluster's ingress: a probe row's visibility delay
(from the primary's commit acknowledgement to the row being readable on the replica, polled as fast as the
round trip allows), the primary's own pg_stat_replication.replay_lag, and the bytes of WAL the replica's
replay is behind. Prints figures; asserts nothing.
    python bench/pg_replication.py [--clusters 3] [--rate 500] [--seconds 20]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from harness import pgreplication
from harness.localfleet import postgres, supervisor
from harness.localfleet.state import FleetState

PROBE_DEADLINE_S = 30.0
DRILL_DEADLINE_S = 600
ROOT = Path(__file__).resolve().parents[1]
WRITE = "insert into bench_writes (payload) values (repeat('x', 100));\n"


def timed_up(folder: Path, clusters: int, with_postgres: bool) -> float:
    started = time.monotonic()
    supervisor.up(folder, clusters, say=lambda _line: None, with_postgres=with_postgres)
    return time.monotonic() - started


def visibility_delay(primary: psycopg.Connection, replica: psycopg.Connection, probe: int) -> float:
    """Seconds from the primary acknowledging a probe row's commit to the replica returning it."""
    primary.execute("insert into lag_probe (id) values (%s)", (probe,))
    acked = time.monotonic()
    while not replica.execute("select 1 from lag_probe where id = %s", (probe,)).fetchone():
        if time.monotonic() - acked > PROBE_DEADLINE_S:
            raise TimeoutError(f"probe {probe} not on the replica after {PROBE_DEADLINE_S:.0f} s")
    return time.monotonic() - acked


def wait_replayed(replica: psycopg.Connection, table: str) -> None:
    """Until the replica has replayed the creation of `table` (a query of a table it lacks fails)."""
    ends = time.monotonic() + PROBE_DEADLINE_S
    while replica.execute("select to_regclass(%s)", (table,)).fetchone() == (None,):
        if time.monotonic() > ends:
            raise TimeoutError(f"table {table} not on the replica after {PROBE_DEADLINE_S:.0f} s")
        time.sleep(0.05)


def sample(primary: psycopg.Connection, replica: psycopg.Connection, seconds: float, first: int) -> dict:
    """Probes, the primary's replay_lag and the byte lag, about four times a second for `seconds`."""
    delays, replay_lags, byte_lags = [], [], []
    probe, ends = first, time.monotonic() + seconds
    while time.monotonic() < ends:
        delays.append(visibility_delay(primary, replica, probe))
        byte_lags.append(pgreplication.lag_bytes(primary, replica))
        replay_lags += [s.replay_lag_s for s in pgreplication.standbys(primary) if s.replay_lag_s is not None]
        probe += 1
        time.sleep(0.25)
    return {"delay": delays, "replay_lag": replay_lags, "bytes": byte_lags}


def describe(figures: dict) -> str:
    def stats(values: list[float], unit: Callable[[float], str]) -> str:
        if not values:
            return "none reported"
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return f"median {unit(statistics.median(ordered))}, p95 {unit(p95)}, max {unit(ordered[-1])}"

    def ms(value: float) -> str:
        return f"{value * 1000:.1f} ms"

    def kb(value: float) -> str:
        return f"{value / 1024:.1f} kB"

    return (
        f"  probe visibility delay ({len(figures['delay'])} probes): {stats(figures['delay'], ms)}\n"
        f"  pg_stat_replication.replay_lag: {stats(figures['replay_lag'], ms)}\n"
        f"  replay behind the primary's WAL: {stats(figures['bytes'], kb)}"
    )


def pgbench(
    state: FleetState, secret_password: str, rate: int, seconds: int, script: Path
) -> subprocess.Popen:
    host, port = postgres.endpoint(state, next(c.name for c in state.clusters if c.role == "active"))
    argv = ["pgbench", "-h", host, "-p", str(port), "-U", postgres.SUPERUSER, "-n", "-f", str(script),
            "-R", str(rate), "-T", str(seconds), "-c", "4", "-j", "2", postgres.DATABASE]  # fmt: skip
    env = os.environ | {"PGPASSWORD": secret_password}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def measure_lag(folder: Path, rate: int, seconds: int) -> None:
    state = FleetState.load(folder)
    active = next(c.name for c in state.clusters if c.role == "active")
    replica_name = next(c.name for c in state.clusters if c.role != "active")
    secret_password = postgres.password(folder / "kubeconfig", active)
    with (
        postgres.connect(state, active, secret_password) as primary,
        postgres.connect(state, replica_name, secret_password) as replica,
    ):
        primary.execute("create table lag_probe (id int primary key)")
        primary.execute("create table bench_writes (id bigserial primary key, payload text)")
        for table in ("lag_probe", "bench_writes"):
            wait_replayed(replica, table)
        idle = sample(primary, replica, seconds, 1)
        print(f"idle, replica in {replica_name}:\n{describe(idle)}")
        script = folder / "write.sql"
        script.write_text(WRITE)
        bench = pgbench(state, secret_password, rate, seconds + 4, script)
        try:
            time.sleep(2)  # pgbench's clients connected and at their rate
            loaded = sample(primary, replica, seconds, 100_000)
        finally:
            output, _ = bench.communicate(timeout=seconds + 60)
        achieved = next((line for line in output.splitlines() if line.startswith("tps")), output.strip())
        print(f"under pgbench -R {rate} ({achieved}), replica in {replica_name}:\n{describe(loaded)}")


def drill_under_load(folder: Path, rate: int) -> None:
    """The active-passive drill (drills/test_active_passive.py, the fleet's primary cluster lost) while
    pgbench writes `rate` rows a second to the primary: its RPO beside the lag reported at t0."""
    state = FleetState.load(folder)
    active = next(c.name for c in state.clusters if c.role == "active")
    secret_password = postgres.password(folder / "kubeconfig", active)
    reports = folder / "bench-reports"
    argv = [sys.executable, "-m", "pytest", "drills/test_active_passive.py", "-q", "-p", "no:cacheprovider",
            "--fleet", str(folder / postgres.FLEET_FILE), "--ledger", str(folder / "ledger.json"),
            "--report-dir", str(reports)]  # fmt: skip
    bench = pgbench(state, secret_password, rate, DRILL_DEADLINE_S, folder / "write.sql")
    try:
        env = os.environ | {postgres.PASSWORD_ENV: secret_password}
        drill = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DRILL_DEADLINE_S
        )
    finally:
        bench.terminate()
        bench.communicate(timeout=30)
    (record_path,) = sorted(reports.glob("*/*/record.json"))[-1:] or [None]
    if record_path is None:
        print(f"active-passive under pgbench -R {rate}: no drill record (exit {drill.returncode}):")
        print(drill.stdout[-2000:])
        return
    record = json.loads(record_path.read_text())
    figures = record["figures"]["orders"]
    lags = ", ".join(
        f"{lag['cluster']} {lag['behind_s']:.3g} s behind" for lag in figures["replication_at_t0"]
    )
    print(
        f"active-passive under pgbench -R {rate}: verdict {record['verdict']}; RPO {figures['rpo_s']} s"
        f" ({figures['lost_writes']} of {figures['writes']} sentinel writes lost); lag at t0: {lags}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500, help="writes a second under load (default 500)")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of sampling each (default 20)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetdrill-bench-") as tmp:
        plain, with_pg = Path(tmp) / "plain", Path(tmp) / "postgres"
        try:
            without = timed_up(plain, args.clusters, False)
        finally:
            supervisor.down(plain)
        try:
            with_it = timed_up(with_pg, args.clusters, True)
            print(
                f"fleet up, {args.clusters} clusters, no backups: {without:.1f} s; with --postgres"
                f" (every replica streaming): {with_it:.1f} s, {with_it - without:+.1f} s"
            )
            measure_lag(with_pg, args.rate, args.seconds)
            drill_under_load(with_pg, args.rate)
        finally:
            supervisor.down(with_pg)


if __name__ == "__main__":
    main()
