#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: a build's hub events, from task to tag to repo,
# through the plugin loaded as the hub loads it, into the local RabbitMQ, printed as a consumer
# received them.  Extra arguments go to `koji-messagebus demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/koji-messagebus demo "$@"
