"""The kubelet's webhook authorization for identities outside system:masters: a SubjectAccessReview to the
API server for the request's verb on nodes/<subresource> of this node (pkg/kubelet/server/auth.go), its
answer cached as the kubelet caches it (--authorization-webhook-cache-authorized-ttl 5 m, unauthorized
30 s). metrics-server scrapes /metrics/resource this way with its own client certificate, allowed by its
ClusterRole's nodes/metrics."""

import threading
import time
from collections.abc import Callable

import urllib3
from kubernetes import client

AUTHORIZED_TTL_S = 300.0
UNAUTHORIZED_TTL_S = 30.0
Key = tuple[str, tuple[str, ...], str, str]


class Reviewer:
    """Asks the API server whether a user may `verb` nodes/`subresource` of `node`; remembers the answer."""

    def __init__(self, api: client.ApiClient, node: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.authorization, self.node, self.clock = client.AuthorizationV1Api(api), node, clock
        self.cache: dict[Key, tuple[bool, float]] = {}
        self.lock = threading.Lock()

    def allowed(self, user: str, groups: tuple[str, ...], verb: str, subresource: str) -> bool:
        """The API server's answer (False when it cannot be asked: a refusal, as the kubelet's is)."""
        key = (user, groups, verb, subresource)
        with self.lock:
            known = self.cache.get(key)
        if known and known[1] > self.clock():
            return known[0]
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=list(groups),
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource="nodes", subresource=subresource, name=self.node
                ),
            )
        )
        try:
            answer = bool(
                self.authorization.create_subject_access_review(review, _request_timeout=5).status.allowed
            )
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError):  # a refusal, not cached
            return False
        ttl = AUTHORIZED_TTL_S if answer else UNAUTHORIZED_TTL_S
        with self.lock:
            self.cache[key] = (answer, self.clock() + ttl)
        return answer
