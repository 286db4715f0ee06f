"""Maintenance function, on a TIMER trigger: partitions ahead, expired ones dropped, rollups built,
no-data alerts judged, missed alert evaluations caught up, alert notifications delivered."""

from common import maintenance, runtime, smn


def initializer(context):
    runtime.initialize(context).store.migrate()


def handler(event, context):
    # The agency's temporary keys expire: each pass publishes to SMN with this invocation's.
    smn.use_context(context)
    return maintenance.run(runtime.current())
