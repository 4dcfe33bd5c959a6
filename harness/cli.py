"""`fleetdrill`: the command line. A user's mistake is one line on stderr, never a traceback."""

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from harness import paths
from harness.config import ENVIRONMENTS, load_fleet
from harness.errors import FleetDrillError
from harness.localfleet import apps, build, burst, freeze, supervisor
from harness.localfleet.state import STATE, FleetState

DEFAULT_FLEET_DIR = paths.default_fleet_dir()
DRILLS = Path(__file__).resolve().parents[1] / "drills"
SUITES = ("gate", "quarterly", "gameday")


def _progress() -> build.Progress:
    """A live bar on a terminal; a line per tenth of the work in logs and CI."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        )
        tasks: dict[str, int] = {}

        def show(stage: str, done: int, total: int) -> None:
            if not bar.live.is_started:
                bar.start()
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)
            if total and done >= total:
                bar.stop()

        return show
    printed: dict[str, int] = {}

    def log(stage: str, done: int, total: int) -> None:
        tenth = done * 10 // total if total else -1
        if printed.get(stage) != tenth:
            printed[stage] = tenth
            detail = f"{done}/{total} packages" if total else "the first build takes several minutes"
            print(f"{stage}: {detail}", file=sys.stderr, flush=True)

    return log


def cmd_fleet_build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    supervisor.check_programs()
    extra = (build.PROMETHEUS,) * args.prometheus + (build.METRICS_SERVER,) * args.metrics_server
    binaries = build.ensure_binaries(args.bin_dir, _progress(), extra)
    folders = ", ".join(sorted({str(path.parent) for path in binaries.values()}))
    print(f"{len(binaries)} binaries ready in {folders} ({time.monotonic() - started:.1f} s)")
    return 0


def cmd_fleet_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    state = supervisor.up(
        args.dir,
        args.clusters,
        args.nodes,
        args.bin_dir,
        _progress(),
        backups=not args.no_backups,
        dns=args.dns,
        prometheus=args.prometheus,
        metrics_server=args.metrics_server or args.burst,
        burst=args.burst,
        environments=args.environments,
        with_postgres=args.postgres,
    )
    print(f"fleet up in {time.monotonic() - started:.1f} s: {', '.join(c.name for c in state.clusters)}")
    print(f"kubeconfig: {state.folder / 'kubeconfig'}")
    print(f"fleet file: {state.folder / 'fleet.yaml'}")
    print(f"global endpoint of the sample app: {apps.global_url(state.plan)}/")
    if args.burst:
        print(f"global endpoint of the web tier (overflow): {burst.global_url(state.plan)}/")
    if args.postgres:
        from harness.localfleet import postgres  # psycopg loads only for a fleet with it

        roles = {"active": "primary", "passive": "replica"}
        servers = ", ".join(
            f"{c.name} ({roles.get(c.role, 'cold: restored into')}) {host}:{port}"
            for c in state.clusters
            for host, port in [postgres.endpoint(state, c.name)]
        )
        print(f"PostgreSQL (user postgres, password in each cluster's Secret postgres/postgres): {servers}")
        print(f"its fleet file: {state.folder / postgres.FLEET_FILE} (password in ${postgres.PASSWORD_ENV})")
    return 0


def cmd_fleet_down(args: argparse.Namespace) -> int:
    stopped = supervisor.down(args.dir)
    print(f"fleet in {args.dir} is down ({len(stopped)} processes stopped)")
    return 0


def cmd_fleet_status(args: argparse.Namespace) -> int:
    rows = supervisor.status(args.dir)
    print(f"{'CLUSTER':<12} {'COMPONENT':<24} {'STATE':<5} {'ADDRESS':<15} {'PID':>7} {'RSS':>8}")
    for row in rows:
        rss = f"{row.rss_bytes / 2**20:.0f} MB" if row.up else "-"
        state = "up" if row.up else "down"
        print(f"{row.cluster:<12} {row.component:<24} {state:<5} {row.address:<15} {row.pid:>7} {rss:>8}")
    return 0


def cmd_fleet_stop(args: argparse.Namespace) -> int:
    stopped = supervisor.stop_cluster(args.dir, args.cluster)
    print(f"cluster {args.cluster} lost: {len(stopped)} processes killed (SIGKILL); its data stays on disk")
    return 0


def cmd_fleet_start(args: argparse.Namespace) -> int:
    started = time.monotonic()
    supervisor.start_cluster(args.dir, args.cluster)
    print(f"cluster {args.cluster} is back and ready ({time.monotonic() - started:.1f} s)")
    return 0


def cmd_fleet_freeze(args: argparse.Namespace) -> int:
    stopped = freeze.freeze(FleetState.load(args.dir.resolve()), args.node)
    print(f"node {args.node} frozen ({stopped} processes); `fleetdrill fleet thaw {args.node}` resumes it")
    return 0


def cmd_fleet_thaw(args: argparse.Namespace) -> int:
    freeze.thaw(FleetState.load(args.dir.resolve()), args.node)
    print(f"node {args.node} thawed")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the drill catalogue through pytest and the plugin; non-zero when any objective is missed."""
    import pytest

    from harness.faults import new_run_id
    from harness.report import publish, summary

    load_fleet(args.fleet)  # a mistake in the fleet file is one line, before anything runs
    run_id = new_run_id()
    argv = [
        *(["--suite", args.suite] if args.suite else []),
        *(["--app", args.app] if args.app else []),
        *(["--dry-run", "-rs"] if args.dry_run else []),
        str(args.drills),
        "--fleet",
        str(args.fleet),
        "--report-dir",
        str(args.report_dir),
        "--run-id",
        run_id,
        "-p",
        "no:cacheprovider",
        "--progress",
        *args.pytest_args,
    ]
    code = int(pytest.main(argv))
    if code == pytest.ExitCode.USAGE_ERROR:  # pytest said why in one line (bad option, unreachable cluster)
        return 1
    if (args.report_dir / run_id / "report.html").exists():
        publish.point_latest(args.report_dir)
        summary.show(publish.located(args.report_dir, run_id))
    else:
        print(f"no drill records for run {run_id} in {args.report_dir.resolve()}")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild a run's HTML report, history lines and evidence pack from its drill records; or check the
    evidence pack against its manifest (--verify)."""
    from harness.report import evidence, publish, runs, summary

    run_id = runs.check_run_id(args.run_id, "RUN_ID") if args.run_id else None
    if args.verify:
        run = runs.load_run(args.report_dir, run_id)
        problems = evidence.verify(run.folder / evidence.EVIDENCE)
        if problems:
            raise FleetDrillError(f"evidence of run {run.run_id} fails its manifest: {'; '.join(problems)}")
        print(f"evidence pack of run {run.run_id} matches its manifest ({run.folder / evidence.EVIDENCE})")
        return 0
    published = publish.publish(args.report_dir, run_id, with_evidence=args.evidence)
    publish.point_latest(args.report_dir)
    summary.show(published)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the local fleet when none runs (with Prometheus: the drills judge the app's PromQL objectives
    too; and PostgreSQL, where the sample app keeps its orders, replicated across the clusters, unless
    --no-postgres), then run the quarterly suite (or --suite) against it: its fleet-postgresql.yaml when it
    has PostgreSQL."""
    folder = args.dir
    if not (folder / STATE).exists():
        cmd_fleet_up(
            argparse.Namespace(
                dir=folder,
                clusters=3,
                nodes=3,
                bin_dir=None,
                no_backups=False,
                dns=False,
                prometheus=True,
                metrics_server=False,
                burst=False,
                environments=(),
                postgres=args.postgres,
            )
        )
    args.fleet = folder / "fleet.yaml"
    from harness.localfleet import postgres

    if (folder / postgres.FLEET_FILE).exists():  # its sentinels read the password from the environment
        state = FleetState.load(folder.resolve())
        active = next(c.name for c in state.clusters if c.role == "active")
        os.environ.setdefault(postgres.PASSWORD_ENV, postgres.password(folder / "kubeconfig", active))
        args.fleet = folder / postgres.FLEET_FILE
    return cmd_run(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    """The pre-flight DR readiness check of each app (or the named one), the permissions the selected drills
    need in each cluster, and where the harness runs: one line per check; non-zero when anything the DR
    path needs is missing."""
    from datetime import timedelta

    from harness import catalogue, needs, placement, promready, rbac, units
    from harness.fleet import FleetAccess
    from harness.preflight import preflight

    fleet = load_fleet(args.fleet)
    try:
        margin = timedelta(seconds=units.parse_duration(args.margin))
    except ValueError:
        raise FleetDrillError(f"--margin: expected a duration such as 168h, got {args.margin!r}") from None
    names = [fleet.app(args.app).name] if args.app else [app.name for app in fleet.apps]
    if not names:
        raise FleetDrillError(f"{args.fleet}: apps: expected at least one app to check, got none")
    known = needs.parts()
    drills = [
        d for d in catalogue.collect(args.drills, args.fleet, args.suite, known, args.app) if d.app in names
    ]
    access, failed = FleetAccess(fleet), 0
    try:
        for name in names:
            readiness = preflight(fleet, access, name, margin)
            print(f"app {name}:")
            print("\n".join(f"  {line}" for line in readiness.lines()))
            failed += len(readiness.problems)
        down = access.unreachable()
        where = placement.declared(fleet) or placement.in_cluster(fleet, access, down)
        review = rbac.review(fleet, access, needs.needs(fleet, drills), down)
    finally:
        access.close()
    selection = f"{args.drills}" + (f", suite {args.suite}" if args.suite else "")
    if drills:
        print(f"permissions of {len(drills)} selected drill(s) ({selection}):")
        print("\n".join(f"  {line}" for line in review.lines(len(drills))))
    else:
        print(f"permissions: no drill of {selection} names app {', '.join(names)}; none asked")
    for line in placement.warnings(fleet, where, drills):
        print(line)
    failed += len(review.findings)
    metrics = promready.readiness(fleet, [fleet.app(name) for name in names])
    if metrics:
        print("prometheus:")
        print("\n".join(f"  {check.line()}" for check in metrics))
        failed += sum(not check.ok for check in metrics)
    print(f"{failed} problem(s) on the DR path" if failed else "ready: every check passed")
    return 1 if failed else 0


def cmd_gate(args: argparse.Namespace) -> int:
    """The progressive-rollout gate of one stage: one line per check, a headline per app; non-zero when
    any check failed or nothing was judged."""
    from harness import units
    from harness.fleet import FleetAccess
    from harness.gate import run_gate

    fleet = load_fleet(args.fleet)
    fleet.stage(args.stage)  # an unknown stage is one line, before anything runs
    try:
        soak = None if args.soak is None else units.parse_duration(args.soak)
    except ValueError:
        raise FleetDrillError(f"--soak: expected a duration such as 60s, got {args.soak!r}") from None
    apps = [fleet.app(args.app)] if args.app else list(fleet.apps)
    if not apps:
        raise FleetDrillError(f"{args.fleet}: apps: expected at least one app to gate, got none")
    access, passed = FleetAccess(fleet), True
    try:
        for app in apps:
            result = run_gate(fleet, access, app, args.stage, soak, args.image)
            print(f"app {app.name}:")
            print("\n".join(f"  {line}" for line in result.lines()))
            print(result.headline())
            passed = passed and result.passed
    finally:
        access.close()
    return 0 if passed else 1


def cmd_promote(args: argparse.Namespace) -> int:
    """Fail an app over by hand, as the promote strategy does: the Gslb's primary, then the data primary
    (for game days, and as the script of a `command` failover strategy)."""
    from harness.fleet import FleetAccess
    from harness.strategies.promote import promote
    from harness.timeline import Timeline

    fleet = load_fleet(args.fleet)
    app, cluster = fleet.app(args.app), fleet.cluster(args.to)
    access, timeline = FleetAccess(fleet), Timeline()
    try:
        promote(access, app, cluster.name, timeline)
    finally:
        access.close()
    promoted = timeline.events("data.promoted")
    epoch = promoted[-1].detail["epoch"] if promoted else None
    data = (
        "no promote call in the fleet file"
        if not promoted
        else "no epoch"
        if epoch is None
        else f"epoch {epoch}"
    )
    print(f"{app.name}: {cluster.name} is primary ({data})")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    """Revert every fault a crashed run left in the ledger, then free the drill leases of the runs whose
    faults were reverted (idempotent)."""
    from harness.faults import RecoverError, recover
    from harness.fleet import FleetAccess
    from harness.lease import LeasePlaces, release_runs

    fleet = load_fleet(args.fleet)
    access = FleetAccess(fleet)
    try:
        reports = recover(args.ledger, access, force=args.force)
    except RecoverError as error:
        print("\n".join(report.line() for report in error.reports), file=sys.stderr)
        raise FleetDrillError(str(error)) from None
    else:
        holders: dict[str, set[str]] = {}
        for report in reports:
            for cluster in report.entry.fault["targets"]:
                holders.setdefault(cluster, set()).add(report.entry.holder)
        for problem in release_runs(holders, LeasePlaces.of(fleet), access.api_client):
            print(f"fleetdrill: warning: {problem}", file=sys.stderr)
    finally:
        access.close()
    print("\n".join(report.line() for report in reports) or f"nothing to recover in {args.ledger}")
    return 0


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _environments(text: str) -> tuple[str, ...]:
    """--environments: a comma-separated list of dev, staging and prod."""
    found = tuple(part.strip() for part in text.split(","))
    bad = [part for part in found if part not in ENVIRONMENTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(ENVIRONMENTS)}, got {', '.join(map(repr, bad))}"
        )
    return found


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fleetdrill", description="Chaos and DR drills for Kubernetes fleets.")
    commands = top.add_subparsers(dest="command", required=True)
    fleet = commands.add_parser("fleet", help="the embedded local fleet of real Kubernetes control planes")
    actions = fleet.add_subparsers(dest="action", required=True)

    def action(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        if name != "build":
            sub.add_argument(
                "--dir",
                type=Path,
                default=DEFAULT_FLEET_DIR,
                help=f"fleet folder (default {DEFAULT_FLEET_DIR}; env FLEETDRILL_FLEET_DIR)",
            )
        if name in ("build", "up"):
            sub.add_argument(
                "--bin-dir",
                type=Path,
                default=None,
                help="use official release binaries from this folder (env FLEETDRILL_BIN_DIR)",
            )
        return sub

    fleet_build = action(
        "build", cmd_fleet_build, "build the Kubernetes binaries into the cache (minutes the first time)"
    )
    fleet_build.add_argument(
        "--prometheus", action="store_true", help="and Prometheus, for `fleet up --prometheus`"
    )
    fleet_build.add_argument(
        "--metrics-server", action="store_true", help="and metrics-server, for `fleet up --metrics-server`"
    )
    up = action("up", cmd_fleet_up, "start a local fleet")
    up.add_argument("--clusters", type=_positive, default=3, help="number of clusters (default 3)")
    up.add_argument("--nodes", type=_positive, default=3, help="nodes per cluster (default 3)")
    up.add_argument(
        "--no-backups", action="store_true", help="without the backup store and Velero (starts faster)"
    )
    up.add_argument(
        "--environments",
        type=_environments,
        default=(),
        metavar="ENV,...",
        help="one environment per cluster, in order (e.g. prod,staging,dev): fleet.yaml's"
        " clusters[].environment; the sample app replicates only within one (default: none declared)",
    )
    up.add_argument(
        "--dns",
        action="store_true",
        help="with CoreDNS: the sample app's global name published as the GSLB fails over, and a caching"
        " resolver for the runner (fleet.yaml: apps[].dns)",
    )
    up.add_argument(
        "--prometheus",
        action="store_true",
        help="with a Prometheus in every cluster, scraping it through service discovery, and a global one"
        " federating them (fleet.yaml: clusters[].prometheus, prometheus and the app's PromQL objectives;"
        " built from its Go module the first time)",
    )
    up.add_argument(
        "--metrics-server",
        action="store_true",
        help="with metrics-server in every cluster: the resource metrics API (`kubectl top`, the"
        " HorizontalPodAutoscaler's CPU target; built from its Go module the first time)",
    )
    up.add_argument(
        "--burst",
        action="store_true",
        help="with metrics-server and a stateless web tier (app `web`) in every cluster, scaled by an HPA on"
        " CPU past what a cluster's nodes hold, behind a global endpoint whose Gslb overflows to the next"
        " cluster when the primary is full (the burst drill's fleet)",
    )
    up.add_argument(
        "--postgres",
        action="store_true",
        help="with PostgreSQL (fixtures/apps/postgres.yaml): the primary in the active cluster, a streaming"
        " replica in every other, each cluster's server on its ingress address, port 5432",
    )
    action("down", cmd_fleet_down, "stop every process of the fleet and remove its namespaces")
    action("status", cmd_fleet_status, "per cluster and component: up, address, pid, RSS")
    action("stop", cmd_fleet_stop, "lose a cluster: SIGKILL all its processes, keep its data").add_argument(
        "cluster"
    )
    action("start", cmd_fleet_start, "bring a lost cluster back on its data").add_argument("cluster")
    action(
        "freeze", cmd_fleet_freeze, "freeze a node: its agent and pods stop dead (the node goes NotReady)"
    ).add_argument("node")
    action("thaw", cmd_fleet_thaw, "let a frozen node run again").add_argument("node")

    def drills(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        sub.add_argument(
            "--drills", type=Path, default=DRILLS, help="drill files or folder (default: drills/)"
        )
        sub.add_argument("--report-dir", type=Path, default=Path("reports"), help="default: reports")
        sub.add_argument("--suite", choices=SUITES, help="only this suite's drills")
        sub.add_argument("--app", help="the app the drills drill (default: the fleet file's first app)")
        sub.add_argument("--dry-run", action="store_true", help="print each drill's plan; change nothing")
        sub.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
        return sub

    drills(
        "run", cmd_run, "run drills against a fleet; exit non-zero when an objective is missed"
    ).add_argument(
        "--fleet",
        type=Path,
        default=paths.default_fleet_file(),
        help="fleet file (default: the local fleet's)",
    )
    demo = drills(
        "demo", cmd_demo, "start the local fleet if none runs, then run the quarterly suite against it"
    )
    demo.add_argument("--dir", type=Path, default=DEFAULT_FLEET_DIR, help="local fleet folder")
    demo.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the fleet with PostgreSQL holding the sample app's orders, and run the suite with its"
        " fleet-postgresql.yaml (default; --no-postgres: the orders in the sample app's own store)",
    )
    demo.set_defaults(suite="quarterly")
    report = commands.add_parser(
        "report",
        help="rebuild a run's HTML report and evidence pack from its drill records",
        description="Rebuild a run's HTML report, history lines and evidence pack from its drill records.",
    )
    report.set_defaults(handler=cmd_report)
    report.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the run (default: the newest)")
    report.add_argument("--report-dir", type=Path, default=Path("reports"), help="default: reports")
    report.add_argument(
        "--evidence",
        action=argparse.BooleanOptionalAction,
        help="build the evidence pack (default: for quarterly and full runs only)",
    )
    report.add_argument("--verify", action="store_true", help="check the evidence pack against its manifest")
    doctor = commands.add_parser(
        "doctor",
        help="pre-flight DR readiness: backups, storage location, standby, credentials",
        description="Check what a failover or restore needs, now: one line per check; exit 1 on a problem.",
    )
    doctor.set_defaults(handler=cmd_doctor)
    doctor.add_argument("--fleet", type=Path, default=paths.default_fleet_file(), help="fleet file")
    doctor.add_argument("--app", help="check this app only (default: every app)")
    doctor.add_argument(
        "--margin", default="168h", help="credentials must stay valid longer than this (default 168h)"
    )
    doctor.add_argument(
        "--drills", type=Path, default=DRILLS, help="the drills whose permissions to check (default: drills/)"
    )
    doctor.add_argument("--suite", choices=SUITES, help="only this suite's drills (default: every drill)")
    gate = commands.add_parser(
        "gate",
        help="the progressive-rollout gate: may the version that reached a stage go on?",
        description="Soak the stage's clusters (probes, SLOs), compare them with the stage before, and check"
        " that the passive cluster can take the new version over: one line per check; exit 1 on a problem.",
    )
    gate.set_defaults(handler=cmd_gate)
    gate.add_argument("--fleet", type=Path, default=paths.default_fleet_file(), help="fleet file")
    gate.add_argument("--stage", required=True, help="the stage the new version reached (rollout.stages)")
    gate.add_argument("--app", help="gate this app only (default: every app)")
    gate.add_argument("--soak", help="how long to probe the stage (default: the fleet file's rollout.soak)")
    gate.add_argument("--image", help="the new version's image: every container of the stage must run it")
    promote = commands.add_parser(
        "promote",
        help="fail an app over by hand: point the Gslb at a cluster and promote the app's data there",
    )
    promote.set_defaults(handler=cmd_promote)
    promote.add_argument("--fleet", type=Path, default=paths.default_fleet_file(), help="fleet file")
    promote.add_argument("--app", required=True, help="the app to fail over")
    promote.add_argument("--to", required=True, metavar="CLUSTER", help="the cluster taking over")
    recover = commands.add_parser("recover", help="revert the faults a crashed run left in the ledger")
    recover.set_defaults(handler=cmd_recover)
    recover.add_argument("--fleet", type=Path, default=paths.default_fleet_file(), help="fleet file")
    recover.add_argument("--ledger", type=Path, default=paths.default_ledger(), help="fault ledger")
    recover.add_argument("--force", action="store_true", help="also revert faults of runs still alive")
    return top


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps it ignored, so
    # `kill -INT` (or a CI runner's cancel) would otherwise leave a fleet or a drill's faults behind.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _terminate)
    try:
        return args.handler(args)
    except FleetDrillError as error:
        print(f"fleetdrill: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fleetdrill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
