"""Query function: devices, latest, history, series, stats, alerts, health and delete-all."""

from common import alert_api, pipeline, query, runtime
from common.router import Router

app = Router()
app.get("/health", public=True)(query.health)
app.get("/ready")(query.readiness)
app.get("/openapi.json", public=True)(query.openapi_document)
app.get("/api/devices")(query.list_devices)
app.get("/api/stats")(query.stats)
app.get("/api/pipeline")(pipeline.pipeline)
app.get("/api/device/{device_id}/latest")(query.device_latest)
app.get("/api/device/{device_id}/history")(query.device_history)
app.get("/api/device/{device_id}/series")(query.device_series)
app.post("/api/delete-all")(query.delete_all)
app.get("/api/alert-rules")(alert_api.list_rules)
app.post("/api/alert-rules")(alert_api.create_rule)
app.route("DELETE", "/api/alert-rules/{rule_id}")(alert_api.delete_rule)
app.get("/api/alerts")(alert_api.list_alerts)
app.post("/api/alerts/{alert_id}/ack")(alert_api.acknowledge)


def initializer(context):
    runtime.initialize(context)


def handler(event, context):
    return app.resolve(event, context)
