"""What the Kubernetes-API faults share: deadlines, tolerant deletes, label selectors, owned cordons.

Every mark a fault leaves in a cluster carries the fault's key (Fault.key), so a revert after a crash finds
exactly what that fault did: nodes it cordoned, objects it created, replicas it recorded.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from kubernetes.client import ApiClient, AppsV1Api, CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from harness.errors import FleetDrillError

T = TypeVar("T")

PREFIX = "fleetdrill.io/"
FAULT_LABEL = PREFIX + "fault"
"""Label on objects a fault creates: its key."""
CORDONED_BY = PREFIX + "cordoned-by"
"""Annotation on a node a fault cordoned (and only such nodes are uncordoned on revert): its key."""
REQUEST_TIMEOUT_S = 15.0
POLL_S = 0.25


@contextmanager
def absent_is_fine() -> Iterator[None]:
    """Ignore 404 Not Found: the object is already gone, which is what a delete or revert wants."""
    try:
        yield
    except ApiException as exc:
        if exc.status != 404:
            raise


def wait_until(condition: Callable[[], T], deadline_s: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; FleetDrillError naming `what` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise FleetDrillError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


_TERM = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[\w./-]+)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<value>[\w.-]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*"
)


def parse_selector(selector: str) -> list[tuple[str, str, frozenset[str]]]:
    """A label selector as (key, operator, values) terms; ValueError naming what is wrong.

    Operators: = (and ==), !=, in, notin, exists (`key`), !exists (`!key`), as kubectl takes them.
    """
    terms: list[tuple[str, str, frozenset[str]]] = []
    for part in _split(selector):
        match = _TERM.fullmatch(part)
        if not match or (match["neg"] and (match["op"] or match["set"])):
            raise ValueError(f"expected a label selector such as app=orders or tier in (a,b), got {part!r}")
        if match["set"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            terms.append((match["key"], match["set"], values))
        elif match["op"]:
            terms.append((match["key"], "!=" if match["op"] == "!=" else "=", frozenset([match["value"]])))
        else:
            terms.append((match["key"], "!exists" if match["neg"] else "exists", frozenset()))
    return terms


def _split(selector: str) -> list[str]:
    """Split at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part for part in [*parts, current] if part.strip()]


def selector_matches(selector: str, labels: Mapping[str, str] | None) -> bool:
    """Whether labels satisfy the selector (an empty selector matches everything)."""
    labels = labels or {}
    checks: dict[str, Callable[[str, frozenset[str]], bool]] = {
        "=": lambda key, values: labels.get(key) in values,
        "!=": lambda key, values: labels.get(key) not in values,
        "in": lambda key, values: labels.get(key) in values,
        "notin": lambda key, values: labels.get(key) not in values,
        "exists": lambda key, values: key in labels,
        "!exists": lambda key, values: key not in labels,
    }
    return all(checks[op](key, values) for key, op, values in parse_selector(selector))


def label_selector_text(selector: Any) -> str:
    """A V1LabelSelector (matchLabels and matchExpressions) as selector text."""
    terms = [f"{key}={value}" for key, value in (selector.match_labels or {}).items()]
    for expression in selector.match_expressions or []:
        op = expression.operator
        if op in ("In", "NotIn"):
            terms.append(f"{expression.key} {op.lower()} ({','.join(expression.values or [])})")
        else:
            terms.append(expression.key if op == "Exists" else f"!{expression.key}")
    return ",".join(terms)


def pod_ready(pod: Any) -> bool:
    """Ready and not terminating, as a PodDisruptionBudget counts a pod healthy."""
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def core(api_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(api_client)


def apps(api_client: ApiClient) -> AppsV1Api:
    return AppsV1Api(api_client)


def coordination(api_client: ApiClient) -> CoordinationV1Api:
    return CoordinationV1Api(api_client)


def cordon(api: CoreV1Api, node: str, owner: str) -> None:
    """Cordon `node` on behalf of fault `owner`; a node someone else cordoned is left as it is."""
    found = api.read_node(node, _request_timeout=REQUEST_TIMEOUT_S)
    annotations = found.metadata.annotations or {}
    if found.spec.unschedulable and annotations.get(CORDONED_BY) != owner:
        return
    body = {"metadata": {"annotations": {CORDONED_BY: owner}}, "spec": {"unschedulable": True}}
    api.patch_node(node, body, _request_timeout=REQUEST_TIMEOUT_S)


def uncordon_owned(api: CoreV1Api, owner: str) -> list[str]:
    """Uncordon every node fault `owner` cordoned; return their names (none: nothing to do)."""
    done = []
    for node in api.list_node(_request_timeout=REQUEST_TIMEOUT_S).items:
        if (node.metadata.annotations or {}).get(CORDONED_BY) == owner:
            body = {"metadata": {"annotations": {CORDONED_BY: None}}, "spec": {"unschedulable": None}}
            with absent_is_fine():
                api.patch_node(node.metadata.name, body, _request_timeout=REQUEST_TIMEOUT_S)
                done.append(node.metadata.name)
    return done


def node_names(api: CoreV1Api, names: tuple[str, ...], selector: str) -> list[str]:
    """The nodes named, or matching the label selector, or (neither given) every node; FleetDrillError
    for a named node the cluster lacks."""
    nodes = api.list_node(label_selector=selector or None, _request_timeout=REQUEST_TIMEOUT_S).items
    present = [node.metadata.name for node in nodes]
    missing = [name for name in names if name not in present]
    if missing:
        raise FleetDrillError(f"no node {', '.join(missing)} (nodes: {', '.join(present) or 'none'})")
    return list(names) or present


def node_summary(api: CoreV1Api, node: str) -> dict[str, Any]:
    """The node's kubelet Summary API (`/stats/summary`, through the API server's node proxy): what each of
    its pods uses, as the kubelet counts it. Needs `get` on nodes/proxy."""
    answer = api.connect_get_node_proxy_with_path(
        node, "stats/summary", _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
    )
    summary = json.loads(answer.data)
    if not isinstance(summary, dict) or not isinstance(summary.get("pods", []), list):
        raise FleetDrillError(f"node {node}: /stats/summary answered no pods list")
    return summary
