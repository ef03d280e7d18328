"""A lease request retried after its answer was lost gets the same lease back
(POST /v1/leases?request=ID), instead of the call waiting for a lease nobody
holds to lapse."""
from test_broker import SMALL, assert_error, broker, client, make_broker, make_client, small_call  # noqa: F401

REQ = "0123456789abcdef0123456789abcdef"


def test_same_request_id_gets_the_same_lease(client):
    client.post("/v1/calls", small_call(1))
    first = client.post("/v1/leases?request=" + REQ, {"worker": "w", "functions": SMALL})
    assert first.status == 200
    again = client.post("/v1/leases?request=" + REQ, {"worker": "w", "functions": SMALL})
    assert again.status == 200
    assert again.json()["lease"] == first.json()["lease"]
    other = client.post("/v1/leases?request=" + "f" * 32, {"worker": "w", "functions": SMALL})
    assert other.status == 204


def test_a_lease_no_longer_current_is_not_given_again(client):
    client.post("/v1/calls", small_call(2))
    first = client.post("/v1/leases?request=" + REQ, {"worker": "w", "functions": SMALL}).json()
    lease = first["lease"]
    r = client.post("/v1/leases/%s/result" % lease["id"],
                    {"call_id": lease["call_id"], "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": "1"}]})
    assert r.status == 200
    again = client.post("/v1/leases?request=" + REQ, {"worker": "w", "functions": SMALL})
    assert again.status == 204


def test_bad_request_id(client):
    r = client.post("/v1/leases?request=xyz", {"worker": "w", "functions": SMALL})
    assert_error(r, 400, "EINVAL", "request")
