"""Alert notifications to the webhook and to an SMN topic, against the real PostgreSQL.

SMN is played by a local HTTP server that the SDK's client is pointed at (ALERT_SMN_ENDPOINT): the
tests check the request our code makes through Huawei's SDK (the path with the topic's URN, the subject,
the message with the event id, the agency's security token) and what the outbox records. They are a
check of our request, not of SMN: what SMN does with it (and whether a function in the VPC reaches it)
is docs/functiongraph.md, section 10.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import psycopg
import pytest

from common import alerts, notify, smn
from common.settings import FUNCTION_SETTINGS, Settings, SettingsError
from common.store import conninfo
from local.embedded import free_port

from .test_alerts import Receiver

PROJECT = "0123456789abcdef0123456789abcdef"
TOPIC = f"urn:smn:ap-southeast-1:{PROJECT}:iot-alerts"
AGENCY = smn.Credentials("AKAGENCYTEST", "agency-secret-key", "agency-security-token")


class FakeSmn:
    """An SMN endpoint on a local port: records each publish (path, headers, body) and answers with
    the statuses queued in ``failures`` first, then 200 and a message id."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, dict, dict]] = []
        self.failures: list[int] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                if fake.failures:
                    status = fake.failures.pop(0)
                    answer = {"error_code": "SMN.0001", "error_msg": "try again later"}
                else:
                    status, answer = 200, {"request_id": uuid.uuid4().hex, "message_id": uuid.uuid4().hex}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages(self) -> list[dict]:
        return [json.loads(body["message"]) for _, _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_smn():
    fake = FakeSmn()
    yield fake
    fake.close()


@pytest.fixture
def webhook():
    hook = Receiver()
    yield hook
    hook.stop()


@pytest.fixture
def agency(monkeypatch):
    """The agency credentials a maintenance invocation's context would hand over; none from the
    environment, so a test without them sees none."""
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    smn.use_credentials(AGENCY)
    yield AGENCY
    smn.use_credentials(None)


@pytest.fixture
def conn(runtime):
    """The owner's connection, with every change earlier tests left in the outbox delivered everywhere:
    each test sees only its own."""
    with psycopg.connect(conninfo(runtime.settings), autocommit=True) as connection:
        connection.execute(
            "UPDATE alert_outbox SET delivered_at = coalesce(delivered_at, now()),"
            " smn_delivered_at = coalesce(smn_delivered_at, now())"
        )
        yield connection


def changes(conn: psycopg.Connection, count: int, metric: str | None = "power") -> tuple[str, list[str]]:
    """An alert on a device of its own that opens and closes ``count`` times in all, through the same
    outbox writer the alert code uses; returns the device and the event ids, oldest first."""
    device = f"notify-{uuid.uuid4().hex[:8]}"
    rule_id = conn.execute(
        "INSERT INTO alert_rule (name, kind, device_glob, metric_type, condition, threshold, after_seconds)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            "hot plug",
            "threshold" if metric else "no_data",
            device,
            metric,
            ">" if metric else None,
            10 if metric else None,
            None if metric else 60,
        ),
    ).fetchone()[0]
    alert_id = conn.execute(
        "INSERT INTO alert (rule_id, device_id, metric_type, state, opened_at, value)"
        " VALUES (%s, %s, %s, 'open', now(), 20) RETURNING id",
        (rule_id, device, metric or ""),
    ).fetchone()[0]
    for n in range(count):
        alerts.record(conn, "opened" if n % 2 == 0 else "closed", [alert_id])
    ids = conn.execute(
        "SELECT event_id::text FROM alert_outbox WHERE alert_id = %s ORDER BY seq", (alert_id,)
    ).fetchall()
    return device, [event_id for (event_id,) in ids]


def configured(runtime, **settings: str) -> Settings:
    return dataclasses.replace(runtime.settings, **settings)


def state(conn: psycopg.Connection, event_ids: list[str]) -> list[tuple]:
    return conn.execute(
        "SELECT delivered_at IS NOT NULL, attempts, smn_delivered_at IS NOT NULL, smn_attempts, smn_last_error"
        " FROM alert_outbox WHERE event_id = ANY(%s::uuid[]) ORDER BY seq",
        (event_ids,),
    ).fetchall()


def make_due(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE alert_outbox SET next_try_at = now(), smn_next_try_at = now()")


# ---------------------------------------------------------------- the publish request


def test_each_change_is_published_to_the_topic_with_its_event_id_and_a_readable_subject(
    runtime, conn, fake_smn, agency
):
    device, ids = changes(conn, 2)
    settings = configured(runtime, alert_smn_topic_urn=TOPIC, alert_smn_endpoint=fake_smn.url)

    assert notify.deliver_all(conn, settings) == notify.Delivery(2, 0)

    assert len(fake_smn.requests) == 2
    for (path, headers, body), event_id, kind in zip(
        fake_smn.requests, ids, ["opened", "closed"], strict=True
    ):
        # The SDK percent-encodes the URN's colons in the path.
        assert unquote(path) == f"/v2/{PROJECT}/notifications/topics/{TOPIC}/publish"
        assert body["subject"] == f"[iot] alert {kind}: hot plug on {device}/power"
        message = json.loads(body["message"])
        assert message["event_id"] == event_id and message["kind"] == kind
        assert message["alert"]["device_id"] == device and message["alert"]["metric_type"] == "power"
        # Signed by the SDK with the agency's temporary keys: their token travels with each request.
        assert headers["X-Security-Token"] == AGENCY.security_token
        assert headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AGENCY.ak},")
        assert headers["X-Project-Id"] == PROJECT
    # Delivered to SMN only: the webhook, not configured, still has both to send.
    assert [row[:3] for row in state(conn, ids)] == [(False, 0, True)] * 2
    assert notify.deliver_all(conn, settings) == notify.Delivery(0, 0)
    assert len(fake_smn.requests) == 2, "nothing is published twice"


def test_a_5xx_from_smn_is_retried_after_its_back_off_with_the_same_event_id(runtime, conn, fake_smn, agency):
    _, ids = changes(conn, 2)
    settings = configured(runtime, alert_smn_topic_urn=TOPIC, alert_smn_endpoint=fake_smn.url)
    fake_smn.failures = [500]

    assert notify.deliver_all(conn, settings) == notify.Delivery(0, 1)
    (_, _, delivered, attempts, error), waiting = state(conn, ids)
    assert (delivered, attempts) == (False, 1) and "SMN answered 500 SMN.0001" in error
    assert waiting[2:4] == (False, 0), "the second waits behind the first: the order holds"
    # Within the back-off nothing is tried.
    assert notify.deliver_all(conn, settings) == notify.Delivery(0, 0)
    assert len(fake_smn.requests) == 1

    make_due(conn)
    assert notify.deliver_all(conn, settings) == notify.Delivery(2, 0)
    assert [m["event_id"] for m in fake_smn.messages()] == [ids[0], ids[0], ids[1]]
    assert [row[2:] for row in state(conn, ids)] == [(True, 1, None), (True, 0, None)]


def test_the_webhook_and_smn_progress_independently(runtime, conn, fake_smn, webhook, agency):
    _, ids = changes(conn, 3)
    settings = configured(
        runtime, alert_webhook_url=webhook.url, alert_smn_topic_urn=TOPIC, alert_smn_endpoint=fake_smn.url
    )

    # The webhook is down: SMN gets all three all the same.
    assert notify.deliver_all(conn, settings) == notify.Delivery(3, 1)
    assert [m["event_id"] for m in fake_smn.messages()] == ids
    assert [row[:2] for row in state(conn, ids)] == [(False, 1), (False, 0), (False, 0)]

    # Now SMN fails and the webhook is back: the webhook catches up, SMN's record is untouched.
    webhook.start()
    make_due(conn)
    _, more = changes(conn, 1)
    fake_smn.failures = [503]
    assert notify.deliver_all(conn, settings) == notify.Delivery(4, 1)
    assert [body["event_id"] for _, body in webhook.received] == ids + more
    assert [row[2:4] for row in state(conn, ids + more)] == [(True, 0)] * 3 + [(False, 1)]

    # SMN recovers: it sends only what it still owed; the webhook has nothing left.
    make_due(conn)
    assert notify.deliver_all(conn, settings) == notify.Delivery(1, 0)
    assert [m["event_id"] for m in fake_smn.messages()] == ids + more + more
    assert len(webhook.received) == 4
    assert all(row[0] and row[2] for row in state(conn, ids + more))


def test_deliver_still_sends_to_the_webhook_alone(runtime, conn, webhook):
    _, ids = changes(conn, 2)
    webhook.start()
    assert notify.deliver(conn, webhook.url) == notify.Delivery(2, 0)
    assert [body["event_id"] for _, body in webhook.received] == ids
    assert [row[:3] for row in state(conn, ids)] == [(True, 0, False)] * 2


def test_without_credentials_nothing_is_sent_and_the_outbox_says_what_to_do(
    runtime, conn, fake_smn, monkeypatch
):
    for name in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"):
        monkeypatch.delenv(name, raising=False)
    smn.use_credentials(None)
    _, ids = changes(conn, 1)
    settings = configured(runtime, alert_smn_topic_urn=TOPIC, alert_smn_endpoint=fake_smn.url)

    assert notify.deliver_all(conn, settings) == notify.Delivery(0, 1)
    assert fake_smn.requests == []
    ((*_, error),) = state(conn, ids)
    assert "no credentials to publish to SMN" in error and "agency" in error


def test_a_refusal_names_the_agency_right_it_needs(runtime, conn, fake_smn, agency):
    _, ids = changes(conn, 1)
    fake_smn.failures = [403]
    settings = configured(runtime, alert_smn_topic_urn=TOPIC, alert_smn_endpoint=fake_smn.url)
    assert notify.deliver_all(conn, settings) == notify.Delivery(0, 1)
    ((*_, error),) = state(conn, ids)
    assert "SMN answered 403" in error and "smn:topic:publish" in error


# ---------------------------------------------------------------- credentials, subjects, settings


class Context:
    """The methods of a FunctionGraph context that hand over the agency's temporary credentials."""

    def __init__(self, ak: str, sk: str, token: str):
        self.values = (ak, sk, token)

    def getSecurityAccessKey(self):  # noqa: N802 (FunctionGraph's names)
        return self.values[0]

    def getSecuritySecretKey(self):  # noqa: N802
        return self.values[1]

    def getSecurityToken(self):  # noqa: N802
        return self.values[2]


def test_the_newest_context_credentials_are_used_and_a_context_without_an_agency_changes_nothing(monkeypatch):
    monkeypatch.delenv("HUAWEICLOUD_SDK_AK", raising=False)
    try:
        smn.use_context(Context("AK1", "SK1", "T1"))
        smn.use_context(Context("AK2", "SK2", "T2"))
        assert smn.current_credentials() == smn.Credentials("AK2", "SK2", "T2")
        smn.use_context(Context("", "", ""))  # no agency: keys stay the last ones handed over
        smn.use_context(object())  # a context without the methods (the local runner's)
        assert smn.current_credentials().ak == "AK2"
        assert "SK2" not in repr(smn.current_credentials()) and "T2" not in repr(smn.current_credentials())
    finally:
        smn.use_credentials(None)
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "ENVAK")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", "ENVSK")
    assert smn.current_credentials() == smn.Credentials("ENVAK", "ENVSK", "")


def test_subjects_read_well_and_fit_smn():
    alert = {"rule_name": "too hot", "device_id": "dev-1", "metric_type": "temperature"}
    assert smn.subject("opened", alert) == "[iot] alert opened: too hot on dev-1/temperature"
    no_data = {"rule_name": "silent\nfor long", "device_id": "dev-2", "metric_type": None}
    assert smn.subject("closed", no_data) == "[iot] alert closed: silent for long on dev-2"
    long = smn.subject("opened", {**alert, "rule_name": "é" * 600})
    assert len(long.encode()) <= smn.MAX_SUBJECT_BYTES and long.endswith("...")


def test_the_topic_urn_setting_is_checked_and_given_to_the_maintenance_function_only():
    assert Settings(alert_smn_topic_urn=TOPIC).alert_smn_topic_urn == TOPIC
    for bad in ("iot-alerts", f"urn:smn:ap-southeast-1:{PROJECT}", "arn:aws:sns:us-east-1:1:x"):
        with pytest.raises(SettingsError, match="ALERT_SMN_TOPIC_URN must be a topic's URN"):
            Settings(alert_smn_topic_urn=bad)
    with pytest.raises(SettingsError, match="ALERT_SMN_ENDPOINT must be a URL"):
        Settings(alert_smn_endpoint="smn.example.com")
    topic = smn.Topic.parse(TOPIC)
    assert (topic.region, topic.project_id, topic.name) == ("ap-southeast-1", PROJECT, "iot-alerts")
    readers = {name for name, names in FUNCTION_SETTINGS.items() if "ALERT_SMN_TOPIC_URN" in names}
    assert readers == {"maintenance"} and "ALERT_SMN_ENDPOINT" in FUNCTION_SETTINGS["maintenance"]
