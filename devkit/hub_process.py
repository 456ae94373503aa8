"""A hub process for the process-lifecycle tests and bench/idle_cost.py: loads the plugin as the hub does, runs hub
requests that each fire `count` postTag callbacks, then ends the way the test says (a normal
exit runs the plugin's atexit hook).  Run as `python -m devkit.hub_process CONF SCHEMA COUNT
[REQUESTS [EXIT]]`, EXIT one of `normal` (return from main), `kill` (os._exit, no hooks) or
`idle:SECONDS` (stay idle that long, then return from main)."""

from __future__ import annotations

import logging
import os
import sys
import time


def main(argv: list[str]) -> int:
    conf, schema, count = argv[0], argv[1], int(argv[2])
    requests = int(argv[3]) if len(argv) > 3 else 1
    how = argv[4] if len(argv) > 4 else "normal"
    os.environ["KOJI_MESSAGEBUS_CONFIG"] = conf
    logging.basicConfig(level=os.environ.get("KMB_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    import psycopg2

    from devkit.hubdb import DSN, DBWrapper
    from devkit.recorded import entries
    from koji_messagebus.testing import HubSimulator

    raw = psycopg2.connect(DSN, options=f"-c search_path={schema}")
    raw.set_client_encoding("UTF8")
    hub = HubSimulator(DBWrapper(raw), echo_log=True)
    kwargs = entries("postTag")[0]["kwargs"]
    for _ in range(requests):
        hub.request("test", [("postTag", kwargs)] * count)
    print("requests done", flush=True)
    if how == "kill":
        os._exit(0)
    if how.startswith("idle:"):
        time.sleep(float(how.split(":", 1)[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
