"""Authorizer function: APIG's frontend custom authorizer, run before any other function.

APIG calls it with the request's identity (headers, query parameters) and acts on its answer: on
"deny" the gateway answers 401 and no backend runs, so a flood of bad credentials never reaches
ingest or the queries. On "allow" its context (the credential's id, signed) reaches the backend
through the backend parameters each API declares. Event and answer: docs/functiongraph.md, section 8.
"""

import json
import logging

from common import runtime
from common.errors import ServiceUnavailable

log = logging.getLogger(__name__)


def initializer(context):
    runtime.initialize(context)


def handler(event, context):
    current = runtime.current()
    if not current.settings.auth_enabled:
        return {"statusCode": 200, "body": json.dumps({"status": "allow", "context": {}})}
    try:
        return current.tokens.authorize(event)
    except ServiceUnavailable as error:
        # Not a deny: the credential may be fine. APIG answers a failed authorizer with an error of
        # its own, and the caller retries.
        log.warning("cannot check credentials: %s", error.message)
        return {"statusCode": 500, "body": json.dumps({"error": error.message})}
