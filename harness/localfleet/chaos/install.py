"""Chaos Mesh in a cluster of the local fleet, installed through the API as its Helm chart lays it out:
the CRDs, the chaos-mesh namespace, a service account with the controller's ClusterRole, and the
Deployment chaos-controller-manager whose pod the node agents run from the image catalogue."""

import time
from pathlib import Path

from kubernetes import client, config, utils

from harness.errors import FleetDrillError
from harness.localfleet.chaos import crds

NAMESPACE = "chaos-mesh"
NAME = "chaos-controller-manager"
IMAGE = "ghcr.io/chaos-mesh/chaos-mesh:v2.7.2"
LABELS = {
    "app.kubernetes.io/name": "chaos-mesh",
    "app.kubernetes.io/component": "controller-manager",
    "app.kubernetes.io/instance": "chaos-mesh",
}
REQUESTS = {"cpu": "25m", "memory": "128Mi"}
"""As Chaos Mesh's chart asks: a small CPU share above best-effort pods', which a busy node starves first."""
ESTABLISHED_DEADLINE_S = 30.0
PLURALS = [crds.plural(kind) for kind in crds.KINDS]


def cluster_role() -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"chaos-mesh:{NAME}", "labels": LABELS},
        "rules": [
            {
                "apiGroups": [crds.GROUP],
                "resources": [
                    *PLURALS,
                    *(f"{p}/status" for p in PLURALS),
                    *(f"{p}/finalizers" for p in PLURALS),
                ],
                "verbs": ["get", "list", "watch", "update", "patch"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    }


def manifests() -> list[dict]:
    """Everything but the CRDs, in the order they must exist."""
    account = {"name": NAME, "namespace": NAMESPACE}
    pod = {
        "metadata": {"labels": LABELS},
        "spec": {
            "serviceAccountName": NAME,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": NAME,
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": REQUESTS},
                    "securityContext": {"privileged": True},
                }
            ],
        },
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": LABELS}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**account, "labels": LABELS}},
        cluster_role(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"chaos-mesh:{NAME}", "labels": LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"chaos-mesh:{NAME}",
            },
            "subjects": [{"kind": "ServiceAccount", **account}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": LABELS},
                "template": pod,
            },
        },
    ]


def install_crds(api: client.ApiClient) -> None:
    """Create the three CRDs (or update ours) and wait until the API serves them."""
    extensions = client.ApiextensionsV1Api(api)
    for kind in crds.KINDS:
        body = crds.definition(kind)
        try:
            extensions.create_custom_resource_definition(body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            current = extensions.read_custom_resource_definition(body["metadata"]["name"])
            if (current.metadata.labels or {}).get(crds.MANAGED_BY[0]) == crds.MANAGED_BY[1]:
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                extensions.replace_custom_resource_definition(body["metadata"]["name"], body)
    deadline = time.monotonic() + ESTABLISHED_DEADLINE_S
    for kind in crds.KINDS:
        name = f"{crds.plural(kind)}.{crds.GROUP}"
        while not any(
            c.type == "Established" and c.status == "True"
            for c in extensions.read_custom_resource_definition(name).status.conditions or []
        ):
            if time.monotonic() > deadline:
                raise FleetDrillError(f"the CRD {name} is not Established after {ESTABLISHED_DEADLINE_S:g} s")
            time.sleep(0.05)


def install(kubeconfig: Path, context: str) -> None:
    """Our controller for Chaos Mesh's CRDs (install_crds first) in one cluster (already installed parts are
    left as they are)."""
    api = config.new_client_from_config(str(kubeconfig), context=context)
    try:
        for document in manifests():
            try:
                utils.create_from_dict(api, document)
            except utils.FailToCreateError as error:
                if any(e.status != 409 for e in error.api_exceptions):
                    raise
    finally:
        api.close()
