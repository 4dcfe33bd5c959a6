"""A read-only fake Kubernetes API server for unit tests: an ApiClient whose GETs a dict of objects answers,
so the typed clients (CoreV1Api, AppsV1Api, ...) and raw calls run unchanged against it; and a FleetAccess
whose clusters are such fakes; Recording keeps the permissions its GETs take."""

import json
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from harness.config import Fleet
from harness.fleet import FleetAccess
from harness.permissions import Permission


class Response:
    """What ApiClient.request returns (urllib3's response as the client reads it)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.data = status, json.dumps(body).encode()
        self.reason = {200: "OK", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return "application/json" if name.lower() == "content-type" else default

    def getheaders(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}


def _split(path: str) -> tuple[str, list[str]]:
    """An API path as its group-version prefix and the segments after it."""
    parts = path.strip("/").split("/")
    cut = 2 if parts[0] == "api" else 3
    return "/".join(parts[:cut]), parts[cut:]


def _collection(rest: list[str]) -> bool:
    if not rest:
        return False
    namespaced = rest[0] == "namespaces" and len(rest) >= 3
    return len(rest[2:] if namespaced else rest) == 1


class FakeKube(client.ApiClient):
    """Objects by their API path (/api/v1/namespaces/shop/services/web): a GET of that path answers the
    object (404 when absent), a GET of a collection its items, in one namespace or across all (404 for a
    custom kind without its CRD among the objects). `refuse`: paths answered with that HTTP status."""

    def __init__(self, objects: dict[str, dict[str, Any]], refuse: dict[str, int] | None = None) -> None:
        super().__init__(client.Configuration(host="http://fake"))
        self.objects, self.refuse = objects, refuse or {}

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        assert method == "GET", f"a read-only check sent {method} {url}"
        path = urlsplit(url).path
        if path in self.refuse:
            raise client.ApiException(http_resp=Response(self.refuse[path], {"kind": "Status"}))
        if path in self.objects:
            return Response(200, self.objects[path])
        prefix, rest = _split(path)
        if not _collection(rest) or not self._served(prefix, rest[-1]):
            raise client.ApiException(http_resp=Response(404, {"kind": "Status", "code": 404}))
        return Response(200, {"metadata": {}, "items": self._items(prefix, rest)})

    def _served(self, prefix: str, plural: str) -> bool:
        """Built-in kinds are served; a custom kind when its CRD is among the objects."""
        group = prefix.split("/")[1] if prefix.startswith("apis/") else ""
        if "." not in group or group.endswith(".k8s.io"):
            return True
        crds = (o["spec"] for key, o in self.objects.items() if "/customresourcedefinitions/" in key)
        return any(spec["group"] == group and spec["names"]["plural"] == plural for spec in crds)

    def _items(self, prefix: str, rest: list[str]) -> list[dict[str, Any]]:
        items = []
        for key, obj in self.objects.items():
            own_prefix, own = _split(key)
            if own_prefix != prefix or _collection(own):
                continue
            across = len(rest) == 1 and own[0] == "namespaces" and len(own) == 4 and own[2] == rest[0]
            if own[:-1] == rest or across:
                items.append(obj)
        return items


class Recording(FakeKube):
    """FakeKube keeping, of each GET, the permission it takes: get of an object, list of a collection (in
    no namespace when across all of them)."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(objects)
        self.taken: set[Permission] = set()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url).path.strip("/").split("/")
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        namespace = rest[1] if rest[0] == "namespaces" and len(rest) >= 3 else ""
        rest = rest[2:] if namespace else rest
        self.taken.add(Permission("list" if len(rest) == 1 else "get", rest[0], group, namespace))
        return super().request(method, url, *args, **kwargs)


class FakeAccess(FleetAccess):
    """The fleet with each cluster's API answered by a FakeKube."""

    def __init__(self, fleet: Fleet, clusters: dict[str, FakeKube]) -> None:
        super().__init__(fleet)
        self.clusters = clusters

    def api_client(self, cluster: str) -> client.ApiClient:
        return self.clusters[cluster]
