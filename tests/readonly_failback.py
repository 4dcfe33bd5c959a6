"""A broken PostgreSQL runbook for the tests: the local fleet's (harness.localfleet.pgfailover, same
arguments), except that a fail-back to the fleet's active cluster leaves its server read-only, as a
switchover sets an old primary and never lifts it. The app's traffic and the primary are back where they
were; its data path takes no write."""

import sys
from pathlib import Path

from harness.localfleet import pgfailover, postgres
from harness.localfleet.state import FleetState


def main(argv: list[str]) -> int:
    code = pgfailover.main(argv)
    given = dict(arg.removeprefix("--").split("=", 1) for arg in argv)
    state = FleetState.load(Path(given["dir"]).resolve())
    active = next(c.name for c in state.clusters if c.role == "active")
    if code == 0 and given["to"] == active:
        password = postgres.password(state.folder / "kubeconfig", active)
        with postgres.connect(state, active, password) as connection:
            connection.execute("alter system set default_transaction_read_only = on")
            connection.execute("select pg_reload_conf()")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
