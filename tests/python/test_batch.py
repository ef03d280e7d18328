"""Batch endpoints: many submits in one durable transaction, and one long-poll
that answers for many calls (docs/API.md: POST /v1/calls/batch, /v1/calls/wait)."""
import threading
import time

from broker_client import BrokerClient
from test_broker import SMALL, assert_error, broker, client, make_broker, make_client, small_call  # noqa: F401


def finish(client, call_id, m=1):
    r = client.post("/v1/leases", {"worker": "w", "functions": SMALL, "wait_ms": 0})
    assert r.status == 200, r
    lease = r.json()["lease"]
    assert lease["call_id"] == call_id
    r = client.post("/v1/leases/%s/result" % lease["id"],
                    {"call_id": call_id, "state": "done",
                     "outputs": [{"name": "m", "kind": "int", "value": str(m)}]})
    assert r.status == 200, r


def test_batch_submit_stores_all_and_reports_each(client):
    calls = [small_call(i) for i in range(50)]
    bad = dict(small_call(999), id="00" * 32)
    r = client.post("/v1/calls/batch", {"calls": calls[:25] + [bad] + calls[25:]})
    assert r.status == 200, r
    results = r.json()["results"]
    assert len(results) == 51
    assert results[25]["error"]["code"] == "EINVAL" and "00" * 32 in results[25]["error"]["message"]
    ok = results[:25] + results[26:]
    assert all(x["created"] and x["call"]["state"] == "queued" for x in ok)
    assert [x["call"]["id"] for x in ok] == [c["id"] for c in calls]
    # The same batch again: the same calls, nothing new.
    r = client.post("/v1/calls/batch", {"calls": calls})
    assert all(not x["created"] for x in r.json()["results"])
    stats = client.get("/v1/functions/p2prpc_small/stats").json()
    assert stats["queued"] == 50


def test_batch_submit_limits_and_shape(client):
    assert_error(client.post("/v1/calls/batch", {"calls": []}), 413, "ELIMIT", "1 to 1000")
    assert_error(client.post("/v1/calls/batch", {"nope": 1}), 400, "EINVAL", "calls")
    r = client.post("/v1/calls/batch", {"calls": [5]})
    assert r.json()["results"][0]["error"]["code"] == "EINVAL"


def test_wait_answers_when_one_of_many_finishes(broker, client, make_client):
    calls = [small_call(i) for i in range(3)]
    client.post("/v1/calls/batch", {"calls": calls})
    ids = [c["id"] for c in calls]
    # Nothing finished: an immediate wait answers empty.
    r = client.post("/v1/calls/wait", {"ids": ids, "wait_ms": 0})
    assert r.json() == {"calls": [], "missing": []}
    got = {}

    def wait():
        other = make_client(broker)
        t = time.monotonic()
        got["reply"] = other.post("/v1/calls/wait", {"ids": ids, "wait_ms": 10000})
        got["took"] = time.monotonic() - t

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    finish(client, ids[0], m=5)
    th.join(10)
    assert got["reply"].status == 200
    body = got["reply"].json()
    assert [c["id"] for c in body["calls"]] == [ids[0]]
    assert body["calls"][0]["outputs"][0]["value"] == "5"
    assert got["took"] - 0.3 < 1.0 and time.monotonic() - t0 < 1.0
    # Deleted calls are reported missing.
    client.delete("/v1/calls/%s" % ids[1])
    body = client.post("/v1/calls/wait", {"ids": ids[1:], "wait_ms": 5000}).json()
    assert body["missing"] == [ids[1]]


def test_wait_times_out_empty(client):
    client.post("/v1/calls", small_call(1))
    t = time.monotonic()
    r = client.post("/v1/calls/wait", {"ids": [small_call(1)["id"]], "wait_ms": 300})
    took = time.monotonic() - t
    assert r.json() == {"calls": [], "missing": []}
    assert 0.25 < took < 1.0


def test_wait_bad_input(client):
    assert_error(client.post("/v1/calls/wait", {"ids": ["zz"]}), 400, "EINVAL", "ids[0]")
    assert_error(client.post("/v1/calls/wait", {"ids": []}), 413, "ELIMIT", "1 to 1000")
    assert_error(client.post("/v1/calls/wait", {"wait_ms": 5}), 400, "EINVAL", "ids")
