"""The local fleet's failover runbook for an app whose data is the fleet's PostgreSQL: the `command` of
fleet-postgresql.yaml's failover (`python -m harness.localfleet.pgfailover --dir D --app A --to C`), what
a user's dr/promote.sh does for their own fleet.

It moves the app's traffic as the fleet file's promote strategy does (the Gslb, the sample app's own
promote call: on the PostgreSQL fleet the app's pg_promote() when no other primary takes writes, refused
when one does, and then made again once the runbook below switched over), then makes C's server the
primary:
- C's server a replica, the primary lost: pg_promote() there;
- the primary reachable (a fail-back): a switchover without loss: C is made a replica of the primary
  first if it is not one (a stale old primary), the primary is set read-only, C is promoted once it has
  replayed all the primary wrote;
then C's ConfigMap postgres-role names C, and each replica and the primary switched over from follow C:
their ConfigMap names it, and each not streaming from C restarts: its initContainer finds C primary on a
newer timeline and copies it (the fencing of fixtures/apps/postgres.yaml). A cluster lost meanwhile is
fenced the same way when it returns. An older primary that answers is left as it is: its fencer made it
read-only when it lost the rest of the fleet (a partition of its region, which may still cut it off from
C) and keeps it so once it meets C; it copies C when it is moved to, or at its next start.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psycopg
from kubernetes import client, config

from harness import pgreplication
from harness.config import load_fleet
from harness.errors import FleetDrillError
from harness.faults.kube import wait_until
from harness.fleet import FleetAccess
from harness.localfleet import postgres
from harness.localfleet.state import FleetState
from harness.strategies.promote import PromoteError, PromoteFailover, promote, promote_data
from harness.timeline import Timeline

STREAMING_DEADLINE_S = 120.0
CAUGHT_UP_DEADLINE_S = 30.0
PROMOTE_WAIT_S = 30
CONNECT_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Server:
    """One cluster's server as it answers now."""

    cluster: str
    in_recovery: bool
    timeline: int
    """Its current timeline (0 for a replica: only a primary's counts here)."""


def look(state: FleetState, password: str, cluster: str) -> Server | None:
    """The cluster's server, None when it does not answer."""
    try:
        with postgres.connect(state, cluster, password) as connection:
            if pgreplication.in_recovery(connection):
                return Server(cluster, True, 0)
            (wal,) = connection.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone() or ("",)
            return Server(cluster, False, int(wal[:8], 16))
    except psycopg.Error:
        return None


def streaming_from(state: FleetState, password: str, primary: str) -> set[str]:
    """The clusters whose replicas stream from `primary`'s server (their application_name)."""
    try:
        with postgres.connect(state, primary, password) as connection:
            return {s.application_name for s in pgreplication.standbys(connection) if s.state == "streaming"}
    except psycopg.Error:
        return set()


class Runbook:
    """Moves the primary among the clusters of the fleet in `folder`; the password is read from the
    Secret of `reachable`, a cluster that answers (the same in every cluster)."""

    def __init__(self, folder: Path, reachable: str) -> None:
        self.state = FleetState.load(folder.resolve())
        self.password = postgres.password(self.state.folder / "kubeconfig", reachable)

    def _core(self, cluster: str) -> tuple[client.ApiClient, client.CoreV1Api]:
        api = config.new_client_from_config(str(self.state.folder / "kubeconfig"), context=cluster)
        return api, client.CoreV1Api(api)

    def connect(self, cluster: str) -> psycopg.Connection:
        """A connection to the cluster's server through its ingress, tried until it is accepted: just after
        the server's pod restarts, the ingress may still pass a connection to the old pod, which closes it."""

        def attempt() -> psycopg.Connection | None:
            try:
                return postgres.connect(self.state, cluster, self.password)
            except psycopg.OperationalError:
                return None

        return wait_until(attempt, CONNECT_DEADLINE_S, f"{cluster}'s server accepting a connection")

    def point_at(self, cluster: str, primary: str) -> None:
        """Write `cluster`'s ConfigMap postgres-role: `primary` is the primary."""
        api, core = self._core(cluster)
        try:
            data = {
                "ROLE": "primary" if cluster == primary else "replica",
                "PRIMARY_HOST": postgres.endpoint(self.state, primary)[0],
            }
            core.patch_namespaced_config_map(postgres.ROLE_SETTINGS, postgres.NAMESPACE, {"data": data})
        finally:
            api.close()

    def restart(self, cluster: str) -> None:
        """Delete the cluster's server pod: its StatefulSet makes a new one, whose initContainer runs."""
        api, core = self._core(cluster)
        try:
            core.delete_namespaced_pod(f"{postgres.STATEFULSET}-0", postgres.NAMESPACE)
        finally:
            api.close()

    def follow(self, clusters: list[str], primary: str) -> None:
        """Make `clusters` replicas of `primary`: their ConfigMap names it, each not streaming from it
        restarts (fenced: its data moved aside, a fresh copy of the primary); wait until all stream."""
        for cluster in clusters:
            self.point_at(cluster, primary)
        behind = [c for c in clusters if c not in streaming_from(self.state, self.password, primary)]
        for cluster in behind:
            self.restart(cluster)
        wait_until(
            lambda: set(behind) <= streaming_from(self.state, self.password, primary),
            STREAMING_DEADLINE_S,
            f"{', '.join(behind)} streaming from {primary}",
        )

    def move_primary(self, to: str) -> str:
        """Make `to`'s server the primary (once it answers: a returning cluster's may be starting); what
        was done, in a line."""
        wait_until(
            lambda: look(self.state, self.password, to), STREAMING_DEADLINE_S, f"{to}'s server answering"
        )
        servers = {c.name: look(self.state, self.password, c.name) for c in self.state.clusters}
        target = servers[to]
        if target is None:
            raise FleetDrillError(f"PostgreSQL failover: {to}'s server does not answer through its ingress")
        primaries = sorted((s for s in servers.values() if s and not s.in_recovery), key=lambda s: s.timeline)
        current = primaries[-1] if primaries else None
        followers = [name for name, server in servers.items() if server and server.in_recovery and name != to]
        if current is not None and current.cluster == to:
            done = f"{to} is the primary already (timeline {current.timeline})"
        elif current is None:
            self._promote(to)
            done = f"{to} promoted (no primary answers)"
        else:
            if not target.in_recovery:  # a stale primary (returned unfenced): a replica of the newest first
                self.follow([to], current.cluster)
            self._switch_over(current.cluster, to)
            followers.append(current.cluster)
            done = f"{to} promoted after {current.cluster} was set read-only and {to} replayed all it wrote"
        self.point_at(to, to)
        self.follow(followers, to)
        stale = [s.cluster for s in primaries if s.cluster not in (to, *followers)]
        if stale:
            done += f"; an older primary left fenced (it copies {to} when moved to): {', '.join(stale)}"
        return done

    def _switch_over(self, old: str, new: str) -> None:
        """No acknowledged write lost: `old` read-only (its sessions ended), `new` caught up with it, then
        `new` promoted."""
        with self.connect(old) as connection:
            connection.execute("alter system set default_transaction_read_only = on")
            connection.execute("select pg_reload_conf()")
            wait_until(
                lambda: connection.execute("show default_transaction_read_only").fetchone() == ("on",),
                10,
                f"{old} read-only",
            )
            connection.execute(  # a transaction begun before: rolled back, never acknowledged
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where backend_type = 'client backend' and pid <> pg_backend_pid()"
            )
            written = pgreplication.current_lsn(connection)
        with self.connect(new) as connection:
            wait_until(
                lambda: (pgreplication.replayed_lsn(connection) or 0) >= written,
                CAUGHT_UP_DEADLINE_S,
                f"{new} replaying all {old} wrote",
            )
        self._promote(new)

    def _promote(self, cluster: str) -> None:
        """pg_promote() the cluster's replica, writable: a switchover's read-only setting its base backup
        copied from an old primary (postgresql.auto.conf) is dropped first, as the fencer drops its own."""
        with self.connect(cluster) as connection:
            connection.execute("alter system reset default_transaction_read_only")
            connection.execute("select pg_reload_conf()")
            query = "select pg_promote(wait => true, wait_seconds => %s)"
            if connection.execute(query, [PROMOTE_WAIT_S]).fetchone() != (True,):
                raise FleetDrillError(f"PostgreSQL failover: {cluster} not promoted in {PROMOTE_WAIT_S} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.localfleet.pgfailover", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the local fleet's folder")
    parser.add_argument("--app", required=True, help="the app failing over")
    parser.add_argument("--to", required=True, help="the cluster taking over")
    args = parser.parse_args(argv)
    fleet = load_fleet(args.dir / "fleet.yaml")  # the app's own promote call (Gslb, its own data)
    app, to = fleet.app(args.app), fleet.cluster(args.to).name
    access = FleetAccess(fleet)
    refused = None
    try:
        promote(access, app, to, Timeline())
    except PromoteError as error:  # the app refuses while another primary takes writes: a switchover
        refused = error
    finally:
        access.close()
    try:
        print(f"{args.app}: {Runbook(args.dir, args.to).move_primary(args.to)}")
        call = cast(PromoteFailover, app.failover).promote
        if refused is not None and call is not None:  # its database is the primary now
            promote_data(app, call, to)
    except FleetDrillError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
