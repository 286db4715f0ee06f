"""Device alerts against the real PostgreSQL: rules through the query handler, threshold alerts judged
by the consumer handler from DMS events, no-data alerts by the maintenance pass."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from common import alerts, dms, maintenance
from common.apig import build_event
from common.readings import Reading, encode_message
from common.runtime import Runtime
from common.store import conninfo
from functions import load_function
from local.context import LocalContext

query = load_function("query")
consumer = load_function("consumer")


def call(method: str, path: str, body: object = None, key: str | None = None, **params) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    raw = b"" if body is None else json.dumps(body).encode()
    event = build_event(method, path, headers=headers, query={k: str(v) for k, v in params.items()}, body=raw)
    response = query.handler(event, None)
    return response["statusCode"], json.loads(response["body"])


def consume(runtime: Runtime, readings: list[Reading]) -> dict:
    event = dms.build_event({runtime.settings.kafka_topic: [encode_message([r.to_json() for r in readings])]})
    return consumer.handler(event, LocalContext("consumer"))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def rule(runtime: Runtime, **fields) -> dict:
    status, body = call("POST", "/api/alert-rules", {"name": unique("rule"), **fields})
    assert status == 201, body
    return body


def alerts_of(device: str, **params) -> list[dict]:
    status, body = call("GET", "/api/alerts", device_id=device, **params)
    assert status == 200, body
    return body["alerts"]


def outbox(runtime: Runtime, alert_id: int) -> list[tuple[str, dict]]:
    with psycopg.connect(conninfo(runtime.settings)) as conn:
        rows = conn.execute(
            "SELECT kind, payload, delivered_at FROM alert_outbox WHERE alert_id = %s ORDER BY seq",
            (alert_id,),
        ).fetchall()
    # Delivery is another job's: nothing here marks a row delivered.
    assert all(delivered is None for _, _, delivered in rows)
    return [(kind, payload) for kind, payload, _ in rows]


@pytest.fixture(autouse=True)
def evaluation_never_fails(caplog):
    """Evaluation swallows its failures (the batch stands), so the tests look for them in the log."""
    yield
    failures = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.name == "common.alerts" and r.levelname == "ERROR"
    ]
    assert not failures


def at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


@pytest.fixture
def start() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def test_concurrent_batches_of_breaching_readings_open_exactly_one_alert(runtime, start):
    device = unique("hot")
    rule(runtime, device=device, metric_type="temperature", condition=">", threshold=50)
    readings = [Reading(device, "temperature", 60.0 + n, at(start, n)) for n in range(10)]
    batches = [readings[0:3], readings[3:5], readings[5:8], readings[8:10]]
    barrier = threading.Barrier(len(batches))
    errors = []

    def send(batch):
        try:
            barrier.wait()
            consume(runtime, batch)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    found = alerts_of(device)
    assert len(found) == 1 and found[0]["state"] == "open", found
    assert [kind for kind, _ in outbox(runtime, found[0]["id"])] == ["opened"]


def test_a_redelivered_batch_opens_nothing_twice(runtime, start):
    device = unique("again")
    rule(runtime, device=device, metric_type="power", condition=">=", threshold=100, clear_threshold=90)
    batch = [
        Reading(device, "power", 120.0, at(start, 0)),
        Reading(device, "power", 80.0, at(start, 10)),  # closes
        Reading(device, "power", 130.0, at(start, 20)),  # opens a second one
    ]
    consume(runtime, batch)
    first = alerts_of(device)
    assert [a["state"] for a in first] == ["open", "closed"]
    consume(runtime, batch)  # the trigger delivers it again
    assert alerts_of(device) == first
    for alert in first:
        kinds = [kind for kind, _ in outbox(runtime, alert["id"])]
        assert kinds == (["opened"] if alert["state"] == "open" else ["opened", "closed"])


def test_hysteresis_closes_only_back_across_the_clear_threshold(runtime, start):
    device = unique("hyst")
    made = rule(
        runtime, device=device, metric_type="temperature", condition=">", threshold=80, clear_threshold=70
    )
    values = [85, 75, 79, 81, 72]  # opens at 85; 75..72 stay above 70
    consume(runtime, [Reading(device, "temperature", v, at(start, n)) for n, v in enumerate(values)])
    (alert,) = alerts_of(device)
    assert alert["state"] == "open" and alert["value"] == 85 and alert["rule_id"] == made["id"]
    assert alert["rule_name"] == made["name"] and alert["metric_type"] == "temperature"
    consume(runtime, [Reading(device, "temperature", 70.0, at(start, 10))])  # 70 is not above 70
    (alert,) = alerts_of(device)
    assert alert["state"] == "closed" and alert["closed_at"] == at(start, 10).isoformat()
    [(kind, payload)] = outbox(runtime, alert["id"])[1:]
    assert kind == "closed" and payload["state"] == "closed" and payload["device_id"] == device


def test_for_seconds_needs_an_unbroken_breach(runtime, start):
    device = unique("for")
    rule(runtime, device=device, metric_type="voltage", condition="<", threshold=200, for_seconds=60)
    # 0..50 s breaching, then a good reading at 55 s, then breaching again from 70 s.
    breach = [Reading(device, "voltage", 190.0, at(start, s)) for s in (0, 20, 50)]
    consume(runtime, breach + [Reading(device, "voltage", 230.0, at(start, 55))])
    consume(runtime, [Reading(device, "voltage", 190.0, at(start, s)) for s in (70, 100)])
    assert alerts_of(device) == []  # 0..50 was broken at 55; 70..100 is 30 s
    consume(runtime, [Reading(device, "voltage", 185.0, at(start, 130))])  # 70..130: 60 s
    (alert,) = alerts_of(device)
    assert alert["state"] == "open" and alert["opened_at"] == at(start, 130).isoformat()
    assert alert["value"] == 185.0


def test_no_data_opens_after_the_silence_and_closes_with_the_next_reading(runtime):
    device = unique("quiet")
    rule(runtime, kind="no_data", device=device, after_seconds=600)
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    consume(runtime, [Reading(device, "humidity", 40.0, last)])
    assert maintenance.run(runtime, now=last + timedelta(seconds=599))["no_data_alerts_opened"] == 0
    result = maintenance.run(runtime, now=last + timedelta(seconds=601))
    assert result["no_data_alerts_opened"] == 1
    assert maintenance.run(runtime, now=last + timedelta(seconds=700))["no_data_alerts_opened"] == 0
    (alert,) = alerts_of(device)
    assert alert["state"] == "open" and alert["metric_type"] is None
    assert outbox(runtime, alert["id"])[0][0] == "opened"
    consume(runtime, [Reading(device, "humidity", 41.0, last + timedelta(seconds=30))])
    (alert,) = alerts_of(device)
    assert alert["state"] == "closed"
    assert [kind for kind, _ in outbox(runtime, alert["id"])] == ["opened", "closed"]


def test_deleting_a_rule_closes_its_open_alerts(runtime, start):
    device = unique("gone")
    made = rule(runtime, device=device, metric_type="current", condition=">", threshold=1)
    consume(runtime, [Reading(device, "current", 2.0, start)])
    assert call("DELETE", f"/api/alert-rules/{made['id']}") == (
        200,
        {"message": "Alert rule deleted", "alerts_closed": 1},
    )
    (alert,) = alerts_of(device)
    assert alert["state"] == "closed"
    assert made["id"] not in [r["id"] for r in call("GET", "/api/alert-rules")[1]["rules"]]
    assert call("DELETE", f"/api/alert-rules/{made['id']}")[0] == 404
    consume(runtime, [Reading(device, "current", 3.0, at(start, 1))])
    assert len(alerts_of(device)) == 1  # the deleted rule judges nothing


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"metric_type": "temperature", "condition": "=>", "threshold": 1}, "condition"),
        ({"metric_type": "heat", "condition": ">", "threshold": 1}, "metric_type"),
        (
            {"metric_type": "temperature", "condition": ">", "threshold": 5, "clear_threshold": 6},
            "clear_threshold",
        ),
        (
            {"metric_type": "temperature", "condition": "<", "threshold": 5, "clear_threshold": 4},
            "clear_threshold",
        ),
        ({"metric_type": "temperature", "condition": ">", "threshold": 5, "for_seconds": -1}, "for_seconds"),
        ({"kind": "no_data", "after_seconds": -5}, "after_seconds"),
        ({"metric_type": "temperature", "condition": ">", "threshold": 1, "device": "a b"}, "device glob"),
        ({"metric_type": "temperature", "condition": ">", "threshold": "hot"}, "threshold"),
        ({"metric_type": "temperature", "condition": ">", "threshold": 1, "treshold": 2}, "treshold"),
        ({"kind": "sometimes"}, "kind"),
    ],
)
def test_bad_rules_are_400s_naming_the_problem(runtime, body, problem):
    status, answer = call("POST", "/api/alert-rules", {"name": "bad", **body})
    assert status == 400 and problem in answer["error"], answer


def test_rules_need_the_admin_token_and_a_scoped_key_sees_only_its_devices(runtime, start):
    runtime.settings = dataclasses.replace(runtime.settings, auth_enabled=True)
    run = uuid.uuid4().hex[:6]
    admin = runtime.tokens.register(f"ops-{run}", is_admin=True)
    reader = runtime.tokens.register_reader(f"site-a-{run}", [f"site-a-{run}-*"])
    mine, theirs = f"site-a-{run}-1", f"site-b-{run}-1"
    rule_body = {"name": "hot", "device": f"site-?-{run}-*", "metric_type": "temperature", "condition": ">",
                 "threshold": 50}  # fmt: skip
    assert call("POST", "/api/alert-rules", rule_body)[0] == 401
    assert call("POST", "/api/alert-rules", rule_body, key=reader)[0] == 403
    status, made = call("POST", "/api/alert-rules", rule_body, key=admin)
    assert status == 201
    status, listed = call("GET", "/api/alert-rules", key=reader)
    assert status == 200 and made in listed["rules"]
    consume(runtime, [Reading(d, "temperature", 60.0, start) for d in (mine, theirs)])
    status, seen = call("GET", "/api/alerts", key=reader)
    assert status == 200 and {a["device_id"] for a in seen["alerts"]} == {mine}
    assert call("GET", "/api/alerts", key=reader, device_id=theirs)[0] == 403
    status, everything = call("GET", "/api/alerts", key=admin, state="open")
    assert {mine, theirs} <= {a["device_id"] for a in everything["alerts"]}
    alert_id = seen["alerts"][0]["id"]
    assert call("POST", f"/api/alerts/{alert_id}/ack", {}, key=reader)[0] == 403
    status, acked = call("POST", f"/api/alerts/{alert_id}/ack", {}, key=admin)
    assert status == 200 and acked["acknowledged_by"] == f"ops-{run}" and acked["acknowledged_at"]


def test_alert_pages_walk_newest_first(runtime, start):
    device = unique("pages")
    rule(runtime, device=device, metric_type="pressure", condition=">", threshold=10)
    # Five alerts: each breach is followed by a clearing reading.
    consume(
        runtime,
        [Reading(device, "pressure", 20.0 if n % 2 == 0 else 5.0, at(start, n)) for n in range(10)],
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = call("GET", "/api/alerts", device_id=device, **params)[1]
        seen += page["alerts"]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert [a["opened_at"] for a in seen] == [at(start, n).isoformat() for n in (8, 6, 4, 2, 0)]
    status, body = call("GET", "/api/alerts", device_id=unique("other"), cursor=cursor or "x")
    assert status == 400


def test_a_failed_evaluation_is_logged_the_batch_stands_and_maintenance_judges_it(
    runtime, start, monkeypatch, caplog
):
    device = unique("broken")
    made = rule(runtime, device=device, metric_type="temperature", condition=">", threshold=0)
    # A series never judged is caught up from the rule's creation on.
    start = datetime.fromisoformat(made["created_at"]) + timedelta(milliseconds=1)

    def broken(conn, readings):
        raise psycopg.errors.DeadlockDetected("simulated")

    monkeypatch.setattr(alerts, "_evaluate", broken)
    readings = [Reading(device, "temperature", v, at(start, n)) for n, v in enumerate([1.0, -1.0, 2.0])]
    assert consume(runtime, readings)["stored"] == 3
    assert "alert evaluation failed" in caplog.text
    caplog.clear()  # expected here; the autouse check looks for unexpected ones
    assert alerts_of(device) == []
    monkeypatch.undo()
    # The next maintenance pass judges them from the series' watermark: opened, closed, opened.
    assert maintenance.run(runtime)["alert_readings_caught_up"] >= 3
    newer, older = alerts_of(device)
    assert (older["opened_at"], older["closed_at"]) == (at(start, 0).isoformat(), at(start, 1).isoformat())
    assert newer["state"] == "open" and newer["opened_at"] == at(start, 2).isoformat()
    maintenance.run(runtime)
    assert len(alerts_of(device)) == 2  # judged once
    consume(runtime, [Reading(device, "temperature", -5.0, at(start, 3))])  # and on from there
    assert [a["state"] for a in alerts_of(device)] == ["closed", "closed"]


class Receiver:
    """A webhook receiver on a local port, recording (Idempotency-Key, body) of each POST; it can be
    down (nothing listening on its port) and come up later on the same port."""

    def __init__(self):
        from local.embedded import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.received: list[tuple[str, dict]] = []
        self.server = None

    def start(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.headers["Idempotency-Key"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def test_every_change_reaches_the_webhook_once_in_order_also_after_it_was_down(runtime, start):
    from common.settings import Settings

    device = unique("hook")
    rule(runtime, device=device, metric_type="power", condition=">", threshold=10)
    consume(runtime, [Reading(device, "power", v, at(start, n)) for n, v in enumerate([20, 5, 30, 1])])
    ids = {a["id"] for a in alerts_of(device)}
    assert len(ids) == 2  # opened and closed twice: four changes
    receiver = Receiver()
    settings = Settings(**{**runtime.settings.__dict__, "alert_webhook_url": receiver.url})
    delivering = Runtime(settings)
    try:
        # The receiver is down: the first notification fails and waits out its back-off.
        summary = maintenance.run(delivering)
        assert (summary["notifications_sent"], summary["notification_failures"]) == (0, 1)
        assert maintenance.run(delivering)["notification_failures"] == 0  # not due yet: not tried
        receiver.start()
        with psycopg.connect(conninfo(runtime.settings), autocommit=True) as conn:
            conn.execute("UPDATE alert_outbox SET next_try_at = now() WHERE delivered_at IS NULL")
        while maintenance.run(delivering)["notifications_sent"]:
            pass
        assert maintenance.run(delivering)["notifications_sent"] == 0  # nothing is sent twice
    finally:
        receiver.stop()
        delivering.close()
    mine = [(key, body) for key, body in receiver.received if body["alert"]["device_id"] == device]
    assert [body["kind"] for _, body in mine] == ["opened", "closed", "opened", "closed"]
    assert all(key == body["event_id"] for key, body in mine)
    assert len({key for key, _ in receiver.received}) == len(receiver.received)
    with psycopg.connect(conninfo(runtime.settings)) as conn:
        attempts = conn.execute(
            "SELECT max(attempts), bool_and(delivered_at IS NOT NULL) FROM alert_outbox"
            " WHERE alert_id = ANY(%s)",
            (list(ids),),
        ).fetchone()
    assert attempts[1] is True


def test_readings_out_of_order_are_judged_by_when_they_were_measured(runtime, start):
    device = unique("late")
    rule(runtime, device=device, metric_type="temperature", condition=">", threshold=50, for_seconds=60)
    consume(runtime, [Reading(device, "temperature", 70.0, at(start, 60))])
    assert alerts_of(device) == []  # one breaching reading spans 0 s
    consume(runtime, [Reading(device, "temperature", 65.0, at(start, 0))])  # measured first, arrived late
    (alert,) = alerts_of(device)  # 0..60: a minute of breach by the readings' own times
    assert alert["state"] == "open" and alert["opened_at"] == at(start, 60).isoformat()
    assert alert["value"] == 70.0
    consume(runtime, [Reading(device, "temperature", 66.0, at(start, 30))])  # late, inside the breach
    assert alerts_of(device) == [alert]
    assert [kind for kind, _ in outbox(runtime, alert["id"])] == ["opened"]


def test_a_late_reading_never_retracts_an_opened_alert(runtime, start):
    device = unique("keep")
    rule(runtime, device=device, metric_type="temperature", condition=">", threshold=50, for_seconds=60)
    consume(runtime, [Reading(device, "temperature", 70.0, at(start, s)) for s in (0, 60)])
    (alert,) = alerts_of(device)
    # A good reading measured at 30 s breaks the minute: the alert would not have opened, but it has.
    consume(runtime, [Reading(device, "temperature", 20.0, at(start, 30))])
    assert alerts_of(device) == [alert]
    consume(runtime, [Reading(device, "temperature", 75.0, at(start, 90))])
    assert alerts_of(device) == [alert]  # still the one alert
    consume(runtime, [Reading(device, "temperature", 40.0, at(start, 120))])
    (closed,) = alerts_of(device)
    assert closed["state"] == "closed" and closed["closed_at"] == at(start, 120).isoformat()


def test_a_late_clearing_reading_closes_the_alert_it_falls_in_and_later_breaches_open_anew(runtime, start):
    device = unique("split")
    rule(runtime, device=device, metric_type="power", condition=">", threshold=10, clear_threshold=5)
    consume(runtime, [Reading(device, "power", 20.0, at(start, s)) for s in (0, 20)])
    (first,) = alerts_of(device)
    assert first["opened_at"] == at(start, 0).isoformat()
    consume(runtime, [Reading(device, "power", 1.0, at(start, 10))])  # measured between them
    newer, older = alerts_of(device)
    assert older["id"] == first["id"] and older["state"] == "closed"
    assert older["closed_at"] == at(start, 10).isoformat()
    assert newer["state"] == "open" and newer["opened_at"] == at(start, 20).isoformat()
    assert [kind for kind, _ in outbox(runtime, older["id"])] == ["opened", "closed"]
    assert [kind for kind, _ in outbox(runtime, newer["id"])] == ["opened"]


def test_a_late_breach_that_ended_long_ago_is_recorded_opened_and_closed(runtime, start):
    device = unique("past")
    rule(runtime, device=device, metric_type="humidity", condition=">=", threshold=90)
    consume(runtime, [Reading(device, "humidity", 50.0, at(start, s)) for s in (0, 100)])
    late = [Reading(device, "humidity", v, at(start, s)) for s, v in ((40, 95.0), (50, 99.0))]
    consume(runtime, late)
    (alert,) = alerts_of(device)
    assert (alert["opened_at"], alert["closed_at"]) == (at(start, 40).isoformat(), at(start, 100).isoformat())
    assert alert["state"] == "closed" and alert["value"] == 95.0
    assert [kind for kind, _ in outbox(runtime, alert["id"])] == ["opened", "closed"]
    consume(runtime, late)  # delivered again: nothing new is stored, so nothing is judged
    alerts.evaluate(runtime, late)  # and judged again by hand: the replay finds what is recorded
    assert alerts_of(device) == [alert]
    assert len(outbox(runtime, alert["id"])) == 2


def states(runtime: Runtime, device: str) -> list[tuple]:
    with psycopg.connect(conninfo(runtime.settings)) as conn:
        return conn.execute(
            "SELECT breach_start, judged_at FROM alert_state WHERE device_id = %s", (device,)
        ).fetchall()


def test_only_series_with_a_breach_running_or_an_alert_open_keep_state(runtime, start):
    device = unique("quiet")
    rule(runtime, device=device, metric_type="power", condition=">", threshold=10, for_seconds=30)
    consume(runtime, [Reading(device, "power", 1.0, at(start, s)) for s in range(5)])
    assert states(runtime, device) == []  # nothing to remember about a quiet series
    consume(runtime, [Reading(device, "power", 20.0, at(start, 10))])
    assert states(runtime, device) == [(at(start, 10), at(start, 10))]  # a breach running
    consume(runtime, [Reading(device, "power", 20.0, at(start, 40))])
    assert [a["state"] for a in alerts_of(device)] == ["open"]
    consume(runtime, [Reading(device, "power", 2.0, at(start, 50))])
    assert [a["state"] for a in alerts_of(device)] == ["closed"]
    assert states(runtime, device) == []
    # Quiet again, a late breaching reading is still judged by its time: 10..40 already made the alert.
    consume(runtime, [Reading(device, "power", 30.0, at(start, 20))])
    assert len(alerts_of(device)) == 1


def test_a_batch_stored_but_never_judged_is_judged_when_it_is_delivered_again(runtime, start, monkeypatch):
    device = unique("crash")
    rule(runtime, device=device, metric_type="power", condition=">", threshold=10)
    batch = [Reading(device, "power", 50.0, at(start, 0)), Reading(device, "power", 60.0, at(start, 1))]
    with monkeypatch.context() as patched:
        # The consumer stops between the commit and the judging: the trigger delivers the batch again.
        patched.setattr(alerts, "evaluate", lambda runtime, readings: alerts.Changes())
        assert consume(runtime, batch)["stored"] == 2
    assert alerts_of(device) == []
    assert consume(runtime, batch)["duplicates"] == 2
    (alert,) = alerts_of(device)
    assert alert["opened_at"] == at(start, 0).isoformat()
    consume(runtime, batch)  # and once more: still the one alert
    assert len(alerts_of(device)) == 1


def test_a_late_breach_in_the_past_leaves_the_alert_open_now_alone(runtime, start):
    device = unique("two")
    rule(runtime, device=device, metric_type="power", condition=">", threshold=10)
    consume(
        runtime, [Reading(device, "power", v, at(start, s)) for s, v in ((0, 1.0), (100, 1.0), (200, 50.0))]
    )
    (now_open,) = alerts_of(device)
    late = [Reading(device, "power", 40.0, at(start, 50))]  # a breach between 0 and 100, sent late
    consume(runtime, late)
    newest, past = alerts_of(device)
    assert newest == now_open  # still open, since 200 s
    assert (past["opened_at"], past["closed_at"]) == (at(start, 50).isoformat(), at(start, 100).isoformat())
    (opened, payload), (closed, _) = outbox(runtime, past["id"])
    # The opening shows the alert as it opened, although it was recorded closed.
    assert (opened, payload["state"], payload["closed_at"]) == ("opened", "open", None)
    assert closed == "closed"
