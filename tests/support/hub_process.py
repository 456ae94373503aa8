"""A hub process for the process-lifecycle tests: loads the plugin as the hub does, runs hub
requests that each fire `count` postTag callbacks, then ends the way the test says (a normal
exit runs the plugin's atexit hook).  Run as `python -m tests.support.hub_process CONF SCHEMA COUNT
[REQUESTS [EXIT]]`, EXIT one of `normal` (return from main), `kill` (os._exit, no hooks) or
`idle:SECONDS` (stay idle that long, then return from main)."""

from __future__ import annotations

import logging
import os
import sys
import time

import koji.plugin


def main(argv: list[str]) -> int:
    conf, schema, count = argv[0], argv[1], int(argv[2])
    requests = int(argv[3]) if len(argv) > 3 else 1
    how = argv[4] if len(argv) > 4 else "normal"
    os.environ["KOJI_MESSAGEBUS_CONFIG"] = conf
    logging.basicConfig(level=os.environ.get("KMB_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    from tests.support.hub import Hub, load_plugin
    from tests.support.outbox_db import connect_db
    from tests.support.recorded import entries

    load_plugin()
    kwargs = entries("postTag")[0]["kwargs"]
    hub = Hub(connect_db(schema))
    for _ in range(requests):
        hub.request(lambda cur: [koji.plugin.run_callbacks("postTag", **kwargs) for _ in range(count)])
    print("requests done", flush=True)
    if how == "kill":
        os._exit(0)
    if how.startswith("idle:"):
        time.sleep(float(how.split(":", 1)[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
