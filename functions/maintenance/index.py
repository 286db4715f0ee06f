"""Maintenance function, on a TIMER trigger: partitions ahead, expired ones dropped, rollups backfilled."""

from common import maintenance, runtime


def initializer(context):
    runtime.initialize(context).store.migrate()


def handler(event, context):
    return maintenance.run(runtime.current())
