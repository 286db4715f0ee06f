"""Kafka producer for accepted readings: created once per process, reused across invocations.

Ingest answers only after the broker acknowledged (``acks=all``) the one message that holds all of a
request's readings, so a request is queued whole or not at all. The producer's own delivery timeout is
the wait bound, so a message that was not acknowledged in time is also given up by the producer rather
than written later behind the caller's back.

Every Kafka client of the service (this producer, the readiness check, the local trigger loop) gets its
security arguments from ``client_security``: none for PLAINTEXT; for SASL_SSL the SASL user and a TLS
context that trusts only the CA in KAFKA_SSL_CAFILE (docs/functiongraph.md, section 3).
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from . import logs
from .errors import ServiceUnavailable
from .readings import Reading, encode_message
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

UNAVAILABLE = "The message queue is unavailable; nothing was queued, retry shortly"

# The directory that holds common/: the repository, or in FunctionGraph the unpacked dependency package
# (it carries compiled modules, so the runtime cannot import it from the zip). A relative
# KAFKA_SSL_CAFILE is taken from here, so one value names the packed certificate wherever it lands.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def ca_file_path(cafile: str) -> Path:
    path = Path(cafile).expanduser()
    return path if path.is_absolute() else PACKAGE_ROOT / path


def broker_tls_context(cafile: str) -> ssl.SSLContext:
    """TLS to the brokers: TLS 1.2 or later, and a certificate chain that ends at the CA in ``cafile``.

    Host names are not checked: DMS's client guides say to turn that check off (brokers are reached by
    private IP, and one certificate serves every DMS instance). The chain is still verified, so only a
    broker holding a key certified by that CA can answer; SASL then proves the client to the broker."""
    path = ca_file_path(cafile)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=str(path))
    except FileNotFoundError:
        raise SettingsError(f"KAFKA_SSL_CAFILE {cafile!r}: there is no file {path}") from None
    except OSError as error:  # unreadable, or ssl.SSLError: not PEM, or no certificate in it
        raise SettingsError(f"KAFKA_SSL_CAFILE {cafile!r} ({path}) holds no usable CA: {error}") from error
    return context


def client_security(settings: Settings) -> dict:
    """The security arguments of a kafka-python client (producer, admin, consumer) for ``settings``.

    Raises SettingsError when the CA file cannot be read, before anything connects."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,  # kafka-python's name for PLAIN and SCRAM
        "sasl_plain_password": settings.kafka_sasl_password,
        "ssl_context": broker_tls_context(settings.kafka_ssl_cafile),
    }


# How many readings the request being served is queueing (``send_for_request``). A message of exactly
# that many, sent from the request's own thread, holds that request's readings alone, so ``publish``
# names it even when the producer in between (the local shim's group commit) does not say which requests
# a message holds.
_queueing: contextvars.ContextVar[int] = contextvars.ContextVar("queueing", default=0)


def send_for_request(producer, readings: Sequence[Reading]) -> list[str]:
    """``producer.send(readings)`` (a ReadingProducer, or the shim's group commit around one) for the
    request being served: its id goes into the message when the message holds its readings alone."""
    token = _queueing.set(len(readings))
    try:
        return producer.send(readings)
    finally:
        _queueing.reset(token)


def _own_request(readings: int) -> list[tuple[str, int]]:
    """The current request as the only one in a message of ``readings`` readings, if it is."""
    request_id = logs.request_id()
    return [(request_id, readings)] if request_id and _queueing.get() == readings else []


class ReadingProducer:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._security: dict | None = None
        self._lock = threading.Lock()

    def _client_security(self) -> dict:
        """``client_security`` once per process: the CA file is read for the first client, not per request."""
        if self._security is None:
            self._security = client_security(self.settings)
        return self._security

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    timeout = max(1000, self.settings.kafka_timeout_ms)
                    self._producer = KafkaProducer(
                        **self._client_security(),
                        bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                        acks="all",
                        # Send at once: nothing else would join a message while its request waits.
                        linger_ms=0,
                        # Kafka's idempotent producer buys nothing here (storage is idempotent by the
                        # reading's identity), costs a round trip per send, and turns fatal when a
                        # broker loses its producer state (an in-memory broker's restart).
                        enable_idempotence=False,
                        max_block_ms=timeout,
                        request_timeout_ms=timeout - 10,
                        delivery_timeout_ms=timeout,
                        bootstrap_timeout_ms=timeout,
                        client_id="iot-ingest",
                        # Its sensors cost CPU on every send and acknowledgement and nothing reads them.
                        metrics_enabled=False,
                    )
        return self._producer

    def send(self, readings: Sequence[Reading]) -> list[str]:
        """Queue one request's readings as one message; raise ServiceUnavailable unless acknowledged.
        The message names the request being served (``logs.request_scope``), for the consumer's log.

        Returns the readings as sent, each as JSON text (``Reading.to_json``), for the caller's response.
        """
        shown = [reading.to_json() for reading in readings]
        if shown:
            self.publish(shown, readings[0].device_id.encode(), [(logs.request_id(), len(shown))])
        return shown

    def publish(
        self, readings: list[str], key: bytes, requests: Sequence[tuple[str, int]] | None = None
    ) -> None:
        """Send one message holding ``readings`` (JSON objects as text) and wait for the broker's
        acknowledgement; ServiceUnavailable, with the broker's error as its cause, if there is none.

        The key is a device id: one device's readings stay in order on one partition. ``requests`` are
        the (request id, number of readings) of the requests whose readings these are, in order (None:
        the current request's, when the message holds its readings alone); the message carries them and
        the time it was sent (common/readings.py, "Kafka messages")."""
        if requests is None:
            requests = _own_request(len(readings))
        value = encode_message(readings, sent_at_ms=time.time_ns() // 1_000_000, requests=requests)
        try:
            future = self._client().send(self.settings.kafka_topic, key=key, value=value)
            future.get(timeout=self.settings.kafka_timeout_ms / 1000 + 1)
        except SettingsError as error:  # the operator's to fix; the device is told only to retry
            log.error("Kafka producer not built: %s", error)
            raise ServiceUnavailable(UNAVAILABLE) from error
        except KafkaError as error:
            log.warning("Kafka write failed: %r", error)
            # A producer that failed may be stuck (e.g. its idempotence state is fatal after a broker
            # restart) and may hold the unsent message: drop it; the next request builds a fresh one.
            self._discard()
            raise ServiceUnavailable(UNAVAILABLE) from error

    def ping(self) -> None:
        """Ask the broker itself (not the producer's cached metadata) whether the topic exists."""
        try:
            security = self._client_security()
        except SettingsError as error:  # /ready says what to fix
            raise ServiceUnavailable(str(error)) from error
        try:
            admin = KafkaAdminClient(
                **security,
                bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                client_id="iot-readiness",
                bootstrap_timeout_ms=2000,
                request_timeout_ms=2000,
            )
        except KafkaError as error:
            raise ServiceUnavailable("The Kafka broker cannot be reached") from error
        try:
            topics = admin.list_topics()
        except KafkaError as error:
            raise ServiceUnavailable("The Kafka broker does not answer") from error
        finally:
            admin.close()
        if self.settings.kafka_topic not in topics:
            raise ServiceUnavailable(f"The Kafka topic {self.settings.kafka_topic!r} does not exist")

    def _discard(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken producer must not hide the original error
                log.debug("closing a failed producer", exc_info=True)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
            self._producer = None
