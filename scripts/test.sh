#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run every test: ruff, the unit tests and the integration tests
# against the local RabbitMQ (AMQP 1.0) and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check koji_messagebus tests bench
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
