"""Consumer function: DMS Kafka trigger events -> PostgreSQL and Redis."""

from common import consume, runtime


def initializer(context):
    runtime.initialize(context).store.migrate()


def handler(event, context):
    return consume.handle_batch(event, context)
