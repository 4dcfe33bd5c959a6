"""Chaos Mesh's CustomResourceDefinitions (chaos-mesh.org/v1alpha1), built from the spec shapes its Go API
types document: NetworkChaos, StressChaos and PodChaos with their selectors, modes, actions and the
status Chaos Mesh writes (conditions, desiredPhase, containerRecords with their events).

Optional fields accept null, as Go's omitempty readers do: clients such as chaostoolkit-kubernetes send
`containerNames: null` or `value: null`, which Chaos Mesh's own CRDs accept.
"""

from typing import Any

GROUP, VERSION = "chaos-mesh.org", "v1alpha1"
MANAGED_BY = ("app.kubernetes.io/managed-by", "fleetdrill")
Schema = dict[str, Any]


def string(*enum: str, pattern: str = "") -> Schema:
    schema: Schema = {"type": "string", "nullable": True}
    if enum:
        schema["enum"] = list(enum)
    if pattern:
        schema["pattern"] = pattern
    return schema


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "nullable": True}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items, "nullable": True}


def string_map(values: Schema | None = None) -> Schema:
    return {"type": "object", "additionalProperties": values or string(), "nullable": True}


def obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "nullable": True}
    if required:
        schema["required"] = list(required)
    return schema


DURATION = string(pattern=r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
REQUIREMENT = obj(("key", "operator"), key=string(), operator=string(), values=array(string()))
SELECTOR = obj(
    namespaces=array(string()),
    nodes=array(string()),
    pods=string_map(array(string())),
    nodeSelectors=string_map(),
    fieldSelectors=string_map(),
    labelSelectors=string_map(),
    expressionSelectors=array(REQUIREMENT),
    annotationSelectors=string_map(),
    podPhaseSelectors=array(string("Pending", "Running", "Succeeded", "Failed", "Unknown", "all")),
)
PERCENT = string(pattern=r"^[0-9]+(\.[0-9]+)?$")


def pod_selection() -> dict[str, Schema]:
    """What every pod-targeting chaos has: a selector, a mode and its value."""
    return {"selector": SELECTOR, "mode": string(*MODES), "value": string()}


TC_PARAMS = {
    "delay": obj(
        ("latency",),
        latency=DURATION,
        jitter=DURATION,
        correlation=PERCENT,
        reorder=obj(("reorder", "gap"), reorder=PERCENT, gap=integer(0), correlation=PERCENT),
    ),
    "loss": obj(("loss",), loss=PERCENT, correlation=PERCENT),
    "duplicate": obj(("duplicate",), duplicate=PERCENT, correlation=PERCENT),
    "corrupt": obj(("corrupt",), corrupt=PERCENT, correlation=PERCENT),
    "bandwidth": obj(
        ("rate", "limit", "buffer"),
        rate=string(pattern=r"^[0-9]+(\.[0-9]+)?([kmgt]?bps)$"),
        limit=integer(1),
        buffer=integer(1),
        peakrate=integer(0),
        minburst=integer(0),
    ),
}
NETWORK_SPEC = obj(
    ("selector", "mode", "action"),
    **pod_selection(),
    action=string("netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"),
    direction=string("to", "from", "both"),
    target=obj(("selector", "mode"), **pod_selection()),
    externalTargets=array(string()),
    device=string(),
    duration=DURATION,
    remoteCluster=string(),
    **TC_PARAMS,
)
STRESS_SPEC = obj(
    ("selector", "mode"),
    **pod_selection(),
    stressors=obj(
        memory=obj(
            ("workers",),
            workers=integer(1),
            size=string(pattern=r"^[0-9]+(\.[0-9]+)?([KMGT]i?B?|%)?$"),
            time=DURATION,
            oomScoreAdj=integer(-1000, 1000),
            options=array(string()),
        ),
        cpu=obj(("workers",), workers=integer(1), load=integer(0, 100), options=array(string())),
    ),
    stressngStressors=string(),
    containerNames=array(string()),
    duration=DURATION,
    remoteCluster=string(),
)
POD_SPEC = obj(
    ("selector", "mode", "action"),
    **pod_selection(),
    action=string("pod-kill", "pod-failure", "container-kill"),
    containerNames=array(string()),
    gracePeriod=integer(0),
    duration=DURATION,
    remoteCluster=string(),
)
RECORD_EVENT = obj(
    ("type", "operation", "timestamp"),
    type=string("Succeeded", "Failed"),
    operation=string("Apply", "Recover"),
    message=string(),
    timestamp=string(),
)
STATUS = obj(
    conditions=array(
        obj(("type", "status"), type=string(), status=string("True", "False", "Unknown"), reason=string())
    ),
    experiment=obj(
        desiredPhase=string("Run", "Stop"),
        containerRecords=array(
            obj(
                ("id", "selectorKey", "phase", "injectedCount", "recoveredCount"),
                id=string(),
                selectorKey=string(),
                phase=string("Injected", "Not Injected"),
                injectedCount=integer(0),
                recoveredCount=integer(0),
                events=array(RECORD_EVENT),
            )
        ),
    ),
    instances=string_map(integer()),
)
KINDS: dict[str, tuple[str, Schema, tuple[str, ...]]] = {
    "NetworkChaos": ("networkchaos", NETWORK_SPEC, ("nc",)),
    "StressChaos": ("stresschaos", STRESS_SPEC, ("sc",)),
    "PodChaos": ("podchaos", POD_SPEC, ("pc",)),
}


def plural(kind: str) -> str:
    return KINDS[kind][0]


def definition(kind: str) -> dict:
    """The CustomResourceDefinition of one chaos kind, with its status subresource and printer columns."""
    name, spec, short = KINDS[kind]
    schema = obj(("spec",), apiVersion=string(), kind=string(), metadata={"type": "object"}, spec=spec)
    schema["properties"]["status"] = STATUS
    del schema["nullable"]  # the root of a schema with a status subresource cannot be
    columns = [
        {"name": "action", "type": "string", "jsonPath": ".spec.action"},
        {"name": "duration", "type": "string", "jsonPath": ".spec.duration"},
        {
            "name": "injected",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='AllInjected')].status",
        },
        {"name": "age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.{GROUP}", "labels": dict([MANAGED_BY])},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": name,
                "singular": name,
                "shortNames": list(short),
                "categories": ["all", "chaos-mesh"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        c for c in columns if kind != "StressChaos" or c["name"] != "action"
                    ],
                }
            ],
        },
    }
