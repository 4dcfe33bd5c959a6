"""The fleet as a drill found it: what did not come back is named."""

from harness.steadystate import Answer, Snapshot, differences


def snapshot(answers: dict, unsettled: dict | None = None) -> Snapshot:
    return Snapshot(answers, unsettled or {})


def test_a_fleet_back_as_found_has_no_difference() -> None:
    before = snapshot(
        {("orders", "global"): Answer(True, "us-east")}, {("orders", "us-east"): frozenset({"a"})}
    )
    assert differences(before, before) == []


def test_what_did_not_come_back_is_named() -> None:
    before = snapshot(
        {
            ("orders", "global"): Answer(True, "us-east"),
            ("orders", "eu-west"): Answer(True, "eu-west"),
            ("orders", "ap-south"): Answer(False, None),
        },
        {("orders", "us-east"): frozenset(), ("orders", "eu-west"): frozenset({"old-pending"})},
    )
    now = snapshot(
        {
            ("orders", "global"): Answer(True, "eu-west"),
            ("orders", "eu-west"): Answer(False, None),
            ("orders", "ap-south"): Answer(False, None),
        },
        {("orders", "eu-west"): frozenset({"old-pending", "new-pending"})},
    )
    assert differences(before, now) == [
        "orders: the global endpoint is served by eu-west, not us-east",
        "orders: the eu-west endpoint does not answer as before",
        "orders: us-east's API server does not answer",
        "orders: pods in eu-west Pending or ending: new-pending",
    ]


def test_global_traffic_back_on_an_active_cluster_has_recovered() -> None:
    """Found mid-failover (served by eu-west), ended served by the active us-east: as found or better; served
    by a third cluster, it did not come back."""
    before = Snapshot({("orders", "global"): Answer(True, "eu-west")}, {}, frozenset({"us-east"}))
    assert differences(before, snapshot({("orders", "global"): Answer(True, "us-east")})) == []
    assert differences(before, snapshot({("orders", "global"): Answer(True, "ap-south")})) == [
        "orders: the global endpoint is served by ap-south, not eu-west"
    ]
