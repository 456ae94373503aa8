#!/usr/bin/env bash
# Set up (scripts/setup.sh: PostgreSQL and every broker), then run every test: ruff and mypy,
# the unit tests, the whole integration suite against RabbitMQ 3.10, the end-to-end
# subset (tests marked `matrix`) once per other broker (KMB_BROKER=..., see devkit/brokers.py), and
# the 3-node RabbitMQ 4 cluster test.  Prints a per-step summary; fails when any step failed.
#
#   KMB_BROKERS      the other brokers (default "rabbitmq4 artemis brokerj")
#   KMB_CLUSTER=0    skip the cluster test (it starts and stops three RabbitMQ 4 nodes)
#   KMB_APACHE=0     skip the Apache httpd + mod_wsgi test (private httpd instances, needs root)
#   KMB_MATRIX_ALLOW_FAIL="b ..."  brokers whose failures are reported but do not fail the run
#                    (default none: a failure anywhere fails the run)
#   extra arguments are passed to every pytest run
set -euo pipefail
cd "$(dirname "$0")/.."
export KMB_BROKERS=${KMB_BROKERS-rabbitmq4 artemis brokerj}
run_start=$SECONDS
bash scripts/setup.sh

PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider -rfEs)
summary=() failed=0

# step NAME ALLOW_FAIL CMD...: run CMD, record its result and time (pytest's 5, no tests: not a failure)
step() {
  local name=$1 allow=$2; shift 2
  local start=$SECONDS rc=0
  printf '\n==> %s\n' "$name"
  "$@" || rc=$?
  local took=$((SECONDS - start)) result
  case $rc in
    0) result=ok ;;
    5) result="ok (no tests)" ;;
    77) result="SKIPPED (see its output)" ;;
    *) if [ "$allow" = yes ]; then result="FAILED (rc $rc, not fatal)"
       else result="FAILED (rc $rc)"; failed=1; fi ;;
  esac
  summary+=("$(printf '%-44s %-48s %5ss' "$name" "$result" "$took")")
}

step "ruff" no .venv/bin/ruff check .
step "mypy" no .venv/bin/python -m mypy koji_messagebus  # settings: pyproject.toml [tool.mypy]
step "unit tests" no "${PYTEST[@]}" tests/unit "$@"

# The docs site (Sphinx + MyST, the [docs] extra): any warning fails, e.g. a broken link or toctree entry.
step "docs site (sphinx-build -W)" no .venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
step "integration, RabbitMQ 3.10 (all)" no env KMB_BROKER=rabbitmq3 "${PYTEST[@]}" tests/integration \
  --ignore=tests/integration/test_cluster.py "$@"

# ---- Python 3.9 (EL9; the oldest supported dependencies, scripts/constraints-el9.txt) and 3.13 (Fedora):
# the venvs of scripts/pythons.sh; a venv it could not make (no such interpreter here) is a SKIPPED step
py_tests() {  # py_tests VENV BROKER PYTEST-ARGS...
  local venv=$1 broker=$2; shift 2
  if [ ! -x "$venv/bin/python" ]; then
    echo "skipped: no $venv (no interpreter for it here; scripts/pythons.sh says which)"; return 77
  fi
  KMB_BROKER=$broker "$venv/bin/python" -m pytest -q -p no:cacheprovider -rfEs "$@"
}
step "unit tests, Python 3.9, oldest deps" no py_tests .venv39 rabbitmq3 tests/unit "$@"
step "integration, RabbitMQ 3.10, Python 3.9, oldest deps" no py_tests .venv39 rabbitmq3 tests/integration \
  --ignore=tests/integration/test_cluster.py "$@"
step "unit tests, Python 3.13" no py_tests .venv313 rabbitmq3 tests/unit "$@"

# Apache httpd + mod_wsgi (issue 16): the plugin in private httpd instances (prefork/embedded and
# daemon mode) through recycling, graceful, graceful-stop and a broker outage; KMB_APACHE=0 skips it.
if [ "${KMB_APACHE:-1}" != 0 ]; then
  apache_test() {
    local rc=0
    KMB_APACHE=1 KMB_BROKER=rabbitmq3 "${PYTEST[@]}" tests/integration/test_apache.py "$@" || rc=$?
    bash scripts/services/stop.sh apache-prefork apache-daemon || true
    return $rc
  }
  step "Apache httpd + mod_wsgi, RabbitMQ 3.10" no apache_test "$@"
fi

allowed() { [[ " ${KMB_MATRIX_ALLOW_FAIL:-} " == *" $1 "* ]] && echo yes || echo no; }
for b in $KMB_BROKERS; do
  step "end to end (matrix), $b" "$(allowed "$b")" env KMB_BROKER="$b" "${PYTEST[@]}" -m matrix tests/integration \
    --ignore=tests/integration/test_cluster.py "$@"
done

if [ "${KMB_CLUSTER:-1}" != 0 ]; then
  cluster_test() {
    local rc=0
    bash scripts/services/cluster.sh start || return 1
    KMB_BROKER=rabbitmq4 "${PYTEST[@]}" tests/integration/test_cluster.py "$@" || rc=$?
    bash scripts/services/cluster.sh stop || true
    return $rc
  }
  step "cluster, 3 x RabbitMQ 4 (slow)" "$(allowed cluster)" cluster_test "$@"
fi

printf '\n==> summary (%s s in all)\n' "$((SECONDS - run_start))"
printf '  %s\n' "${summary[@]}"
exit $failed
