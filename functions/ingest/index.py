"""Ingest function: single and bulk readings -> Kafka."""

from common import ingest, runtime
from common.router import Router

app = Router()
app.post("/api/device/data")(ingest.submit_reading)
app.post("/api/device/data/bulk")(ingest.submit_bulk)


def initializer(context):
    runtime.initialize(context)


def handler(event, context):
    return app.resolve(event, context)
