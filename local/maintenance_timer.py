"""The local stand-in for the maintenance function's TIMER trigger: its handler, now and then every
MAINTENANCE_INTERVAL_SECONDS, in a process of its own (``make run`` starts it).

A TIMER event carries nothing the handler reads, so it gets an event of the documented shape
(docs/functiongraph.md, the TIMER trigger section).
"""

from __future__ import annotations

import argparse
import logging
import time

from common import metrics
from common.settings import Settings
from functions import load_function

from .context import LocalContext

log = logging.getLogger("local.maintenance")


def timer_event() -> dict:
    return {
        "version": "v1.0",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "trigger_type": "TIMER",
        "trigger_name": "local-maintenance",
        "user_event": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the maintenance function on a timer.")
    parser.add_argument("--once", action="store_true", help="one run, then exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    interval = Settings.from_env().maintenance_interval_seconds
    metrics.enable()  # its notification failures, in the run's shared metrics directory
    function = load_function("maintenance")
    function.initializer(LocalContext("maintenance"))
    while True:
        started = time.monotonic()
        try:
            log.info("maintenance: %s", function.handler(timer_event(), LocalContext("maintenance", 300)))
        except Exception:  # the next tick tries again, as the cloud trigger would
            log.exception("maintenance run failed")
        if args.once:
            return
        time.sleep(max(1.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
