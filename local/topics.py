"""Creating the readings topic on any Kafka-protocol broker (embedded, compose's, or a developer's).

In the cloud the topic is a Terraform resource; locally the runner, compose's init and the tests
create it before any consumer subscribes, because a consumer that subscribes to a topic that does not
exist yet may not see it until a metadata refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import kafka.errors
from kafka.admin import KafkaAdminClient

log = logging.getLogger(__name__)


def create_topics(
    bootstrap_servers: str,
    names: list[str],
    partitions: int = 4,
    security: Mapping[str, object] | None = None,
) -> None:
    """Create the topics if they are missing and wait until every partition has a leader.

    ``security`` is ``common.producer.client_security(settings)`` for a broker that wants SASL_SSL.
    A topic that already exists is fine; any other broker error raises.
    """
    if not names:
        return
    admin = KafkaAdminClient(
        **(security or {}), bootstrap_servers=bootstrap_servers.split(","), client_id="iot-admin"
    )
    try:
        response = admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1} for name in names},
            raise_errors=False,
        )
        for topic in response["topics"]:
            error = kafka.errors.for_code(topic["error_code"])
            if error not in (kafka.errors.NoError, kafka.errors.TopicAlreadyExistsError):
                raise error(f"creating topic {topic['name']!r}: {topic.get('error_message')}")
        admin.wait_for_topics(list(names))
    finally:
        admin.close()
    log.info("Kafka topics ready: %s", ", ".join(names))
