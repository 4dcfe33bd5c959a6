"""The node agent's webhook authorization: a SubjectAccessReview per identity, cached as the kubelet does."""

from types import SimpleNamespace

from kubernetes import client

from harness.localfleet.nodeagent import authz


class FakeAuthorization:
    """Answers SubjectAccessReviews from a set of allowed (user, subresource), counting the calls."""

    def __init__(self, allowed: set[tuple[str, str]], failing: bool = False) -> None:
        self.allowed, self.failing, self.reviews = allowed, failing, []

    def create_subject_access_review(self, review: client.V1SubjectAccessReview, **_: object) -> object:
        self.reviews.append(review)
        if self.failing:
            raise client.ApiException(status=503)
        attributes = review.spec.resource_attributes
        allowed = (review.spec.user, attributes.subresource) in self.allowed
        return SimpleNamespace(status=SimpleNamespace(allowed=allowed))


def _reviewer(fake: FakeAuthorization, now: list[float]) -> authz.Reviewer:
    reviewer = authz.Reviewer(client.ApiClient(), "node-1", clock=lambda: now[0])
    reviewer.authorization = fake  # type: ignore[assignment]
    return reviewer


def test_the_api_servers_answer_is_asked_for_this_node_and_cached_for_its_ttl() -> None:
    fake, now = FakeAuthorization({("metrics-server-kubelet-client", "metrics")}), [0.0]
    reviewer = _reviewer(fake, now)
    assert reviewer.allowed("metrics-server-kubelet-client", (), "get", "metrics")
    attributes = fake.reviews[0].spec.resource_attributes
    assert (attributes.resource, attributes.name, attributes.verb) == ("nodes", "node-1", "get")
    assert reviewer.allowed("metrics-server-kubelet-client", (), "get", "metrics") and len(fake.reviews) == 1
    assert not reviewer.allowed("metrics-server-kubelet-client", (), "create", "proxy")
    now[0] = authz.UNAUTHORIZED_TTL_S + 1  # a refusal is asked again sooner than an approval
    assert (
        not reviewer.allowed("metrics-server-kubelet-client", (), "create", "proxy")
        and len(fake.reviews) == 3
    )
    assert reviewer.allowed("metrics-server-kubelet-client", (), "get", "metrics") and len(fake.reviews) == 3
    now[0] = authz.AUTHORIZED_TTL_S + 1
    assert reviewer.allowed("metrics-server-kubelet-client", (), "get", "metrics") and len(fake.reviews) == 4


def test_an_api_server_that_cannot_answer_is_a_refusal_not_remembered() -> None:
    fake, now = FakeAuthorization({("viewer", "metrics")}, failing=True), [0.0]
    reviewer = _reviewer(fake, now)
    assert not reviewer.allowed("viewer", (), "get", "metrics")
    fake.failing = False
    assert reviewer.allowed("viewer", (), "get", "metrics")
