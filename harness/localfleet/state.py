"""What the supervisor keeps in a fleet folder: the clusters, and every process it started (enough to
restart or remove any of them), and how a process is started and recorded."""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness.errors import FleetDrillError
from harness.localfleet import network, processes
from harness.localfleet.addresses import FleetPlan, plan

REGIONS = ("us-east", "eu-west", "ap-south")
STATE = "state.json"


@dataclass(frozen=True)
class ClusterRecord:
    """A cluster of the fleet: its name, region, number in the address plan, role, and environment (None:
    the fleet file declares none)."""

    name: str
    region: str
    index: int
    role: str
    nodes: int = 0
    environment: str | None = None

    def netns_prefix(self, fleet: FleetPlan) -> str:
        return f"{network.prefix(fleet)}c{self.index}-"

    def control_plane_ns(self, fleet: FleetPlan) -> str:
        return f"{self.netns_prefix(fleet)}cp"


@dataclass
class FleetState:
    """What the supervisor keeps in the fleet folder: enough to restart or remove anything it started."""

    folder: Path
    index: int
    clusters: list[ClusterRecord]
    processes: dict[str, dict]

    @property
    def plan(self) -> FleetPlan:
        return plan(self.index)

    def cluster(self, name: str) -> ClusterRecord:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters)
        raise FleetDrillError(f"no cluster {name!r} in the fleet at {self.folder} (clusters: {known})")

    def save(self) -> None:
        data = {
            "index": self.index,
            "clusters": [asdict(c) for c in self.clusters],
            "processes": self.processes,
        }
        tmp = self.folder / f".{STATE}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.folder / STATE)

    @classmethod
    def load(cls, folder: Path) -> "FleetState":
        path = folder / STATE
        if not path.exists():
            raise FleetDrillError(
                f"no local fleet in {folder} (no {STATE}): start one with `fleetdrill fleet up`"
            )
        data = json.loads(path.read_text())
        return cls(folder, data["index"], [ClusterRecord(**c) for c in data["clusters"]], data["processes"])


def cluster_records(count: int, nodes: int, environments: tuple[str, ...] = ()) -> list[ClusterRecord]:
    """Clusters spread over three regions; the first is active, the second passive, the rest standby; with
    environments, one per cluster in the same order (FleetDrillError when their number is not `count`)."""
    if environments and len(environments) != count:
        raise FleetDrillError(
            f"--environments: expected one environment per cluster ({count}), got {len(environments)}: "
            f"{','.join(environments)}"
        )
    records = []
    for i in range(count):
        region = REGIONS[i % len(REGIONS)]
        name = region if i < len(REGIONS) else f"{region}-{i // len(REGIONS) + 1}"
        role = ("active", "passive")[i] if i < 2 else "standby"
        environment = environments[i] if environments else None
        records.append(ClusterRecord(name, region, i, role, nodes, environment))
    return records


def start_process(state: FleetState, spec: processes.ProcessSpec) -> None:
    """Start the process and record how to restart it."""
    started = processes.spawn(spec)
    state.processes[spec.key] = {**asdict(spec), **asdict(started)}


def restart_process(state: FleetState, key: str) -> None:
    """Start a recorded process again, exactly as it was started first."""
    record = state.processes[key]
    start_process(
        state, processes.ProcessSpec(**{f.name: record[f.name] for f in fields(processes.ProcessSpec)})
    )
