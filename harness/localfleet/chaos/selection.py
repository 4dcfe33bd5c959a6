"""Which pods a chaos object selects, as Chaos Mesh selects them: the selector's filters, then the mode.

Pods are raw API objects (dicts). Without namespaces and pods in the selector, the chaos object's own
namespace is searched (Chaos Mesh's webhook defaults it so). Pods being deleted, and finished pods
unless podPhaseSelectors asks for them, are never selected.
"""

import math
import random
from collections.abc import Callable, Iterable

FINISHED = ("Succeeded", "Failed")


class SelectionError(ValueError):
    """The selector or mode cannot be honoured (a bad value, or nothing matched)."""


def _requirement_holds(labels: dict[str, str], requirement: dict) -> bool:
    key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise SelectionError(
        f"expressionSelectors: unknown operator {operator!r} (In, NotIn, Exists, DoesNotExist)"
    )


FIELDS: dict[str, Callable[[dict], str]] = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "spec.nodeName": lambda pod: (pod.get("spec") or {}).get("nodeName") or "",
    "status.phase": lambda pod: (pod.get("status") or {}).get("phase") or "",
}


def _field(pod: dict, name: str) -> str:
    if name not in FIELDS:
        raise SelectionError(f"fieldSelectors: {name!r} is not supported (use {', '.join(FIELDS)})")
    return FIELDS[name](pod)


def matches(pod: dict, selector: dict, namespace: str, node_labels: dict[str, dict[str, str]]) -> bool:
    """Whether one pod passes every filter of a Chaos Mesh selector (nodeSelectors use node_labels)."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    named = selector.get("pods") or {}
    namespaces = selector.get("namespaces") or ([] if named else [namespace])
    phases = selector.get("podPhaseSelectors") or []
    node = spec.get("nodeName") or ""
    checks = [
        not meta.get("deletionTimestamp"),
        not namespaces or meta["namespace"] in namespaces,
        not named or meta["name"] in (named.get(meta["namespace"]) or []),
        not selector.get("nodes") or node in selector["nodes"],
        all(labels.get(k) == v for k, v in (selector.get("labelSelectors") or {}).items()),
        all(annotations.get(k) == v for k, v in (selector.get("annotationSelectors") or {}).items()),
        all(_requirement_holds(labels, r) for r in selector.get("expressionSelectors") or []),
        all(_field(pod, k) == v for k, v in (selector.get("fieldSelectors") or {}).items()),
        all(node_labels.get(node, {}).get(k) == v for k, v in (selector.get("nodeSelectors") or {}).items()),
        status.get("phase") in phases
        if phases and "all" not in phases
        else status.get("phase") not in FINISHED,
    ]
    return all(checks)


def _number(value: object, mode: str) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise SelectionError(f"mode {mode} needs a numeric value, got {value!r}") from None
    if number < 0 or (mode != "fixed" and number > 100):
        raise SelectionError(f"mode {mode}: value {value!r} is out of range")
    return number


def apply_mode(pods: list[dict], mode: str, value: object, rng: random.Random) -> list[dict]:
    """The pods the mode keeps: one, all, fixed N, fixed-percent P, random-max-percent P (Chaos Mesh's
    rounding: floor of the percentage; random-max-percent picks 0..that many)."""
    if not pods:
        raise SelectionError("no pod is selected")
    if mode == "all":
        return list(pods)
    if mode == "one":
        count = 1
    elif mode == "fixed":
        count = int(_number(value, mode))
    elif mode == "fixed-percent":
        count = math.floor(len(pods) * _number(value, mode) / 100)
    elif mode == "random-max-percent":
        count = rng.randint(0, math.floor(len(pods) * _number(value, mode) / 100))
    else:
        raise SelectionError(f"unknown mode {mode!r} (one, all, fixed, fixed-percent, random-max-percent)")
    return rng.sample(list(pods), min(count, len(pods)))


def select(
    pods: Iterable[dict],
    selection: dict,
    namespace: str,
    node_labels: dict[str, dict[str, str]],
    rng: random.Random,
) -> list[dict]:
    """Apply a {selector, mode, value} block (a chaos spec or its target) to the pods, sorted by key."""
    selector = selection.get("selector") or {}
    found = sorted(
        (p for p in pods if matches(p, selector, namespace, node_labels)),
        key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]),
    )
    chosen = apply_mode(found, selection.get("mode") or "one", selection.get("value"), rng)
    return sorted(chosen, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
