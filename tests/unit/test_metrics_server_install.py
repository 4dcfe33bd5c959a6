"""metrics-server's objects: what makes the aggregation layer trust it and the node agents admit it."""

import base64
from ipaddress import IPv4Address, IPv4Network
from types import SimpleNamespace

from cryptography import x509
from cryptography.x509.oid import NameOID

from harness.localfleet import controlplane, metrics_server_install, pki


def _by_kind(documents: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for document in documents:
        found.setdefault(document["kind"], []).append(document)
    return found


def test_the_apiservice_trusts_the_fleet_ca_and_the_serving_certificate_names_the_service() -> None:
    ca = pki.new_ca("test fleet")
    objects = _by_kind(metrics_server_install.manifests(ca))
    (service,) = objects["APIService"]
    assert service["metadata"]["name"] == "v1beta1.metrics.k8s.io"
    assert base64.b64decode(service["spec"]["caBundle"]) == ca.cert
    assert "insecureSkipTLSVerify" not in service["spec"]
    files = objects["Secret"][0]["stringData"]
    serving = x509.load_pem_x509_certificate(files["tls.crt"].encode())
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "metrics-server.kube-system.svc" in names.get_values_for_type(x509.DNSName)
    kubelet = x509.load_pem_x509_certificate(files["kubelet-client.crt"].encode())
    user = kubelet.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert not kubelet.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME), "no group: not a master"
    bindings = [b for b in objects["ClusterRoleBinding"] if b["roleRef"]["name"] == "system:metrics-server"]
    assert {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user} in bindings[0]["subjects"]
    role = next(r for r in objects["ClusterRole"] if r["metadata"]["name"] == "system:metrics-server")
    assert {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]} in role["rules"]


def test_its_kubelet_timeout_is_under_its_resolution_as_metrics_server_requires() -> None:
    documents = metrics_server_install.manifests(pki.new_ca("t"))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    flags = dict(
        a.lstrip("-").split("=", 1)
        for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if "=" in a
    )
    assert int(flags["kubelet-request-timeout"].rstrip("s")) < int(flags["metric-resolution"].rstrip("s"))


def test_every_api_server_runs_the_aggregation_layer_as_front_proxy_client(tmp_path) -> None:
    files = controlplane.ClusterFiles(tmp_path, tmp_path / "ca.crt")
    plan = SimpleNamespace(
        control_plane=IPv4Address("10.0.0.2"),
        service_cidr=IPv4Network("10.96.0.0/16"),
        pod_cidr=IPv4Network("10.200.0.0/16"),
    )
    binaries = {
        name: tmp_path / name
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    }
    components = controlplane.components(files, plan, binaries, controlplane.LocalTimings())
    apiserver = next(c for c in components if c.name == "kube-apiserver")
    assert f"--requestheader-allowed-names={controlplane.FRONT_PROXY_CLIENT}" in apiserver.argv
    assert f"--proxy-client-cert-file={files.cert('front-proxy-client')}" in apiserver.argv
    assert "--enable-aggregator-routing=true" in apiserver.argv
