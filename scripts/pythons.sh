#!/usr/bin/env bash
# The other Pythons of the test run (scripts/test.sh): .venv39, Python 3.9 (EL9's) with the oldest
# supported dependencies (scripts/constraints-el9.txt), and .venv313, Python 3.13 (Fedora's) with the
# newest.  Each interpreter comes from pyenv when it has that version, else python3.X on PATH; where
# neither exists the venv is not made (one line says so) and scripts/test.sh reports its steps as
# skipped.  Idempotent; scripts/setup.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }

# find_python X.Y: the newest pyenv X.Y.*, else pythonX.Y on PATH; nothing when neither exists
find_python() {
  local v=$1 root cand
  if command -v pyenv >/dev/null 2>&1 && root=$(pyenv root 2>/dev/null); then
    cand=$(ls -d "$root"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$cand" ] && [ -x "$cand" ]; then echo "$cand"; return; fi
  fi
  command -v "python$v" 2>/dev/null || true
}

# make_venv DIR X.Y [pip options]: DIR with the package (editable) and its test tools
make_venv() {
  local dir=$1 v=$2 py; shift 2
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    say "no Python $v here (neither pyenv nor python$v on PATH): $dir not made, its test steps are skipped"
    return 0
  fi
  [ -x "$dir/bin/python" ] || { say "creating $dir with $py"; "$py" -m venv "$dir"; }
  "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$dir/bin/python" -m pip install -q "$@" -e '.[test]'
  # proton must be compiled with Cyrus SASL (GSSAPI), as in scripts/setup.sh
  if ! "$dir/bin/python" -c 'import proton, sys; sys.exit(0 if proton.SASL.extended() else 1)'; then
    say "rebuilding python-qpid-proton in $dir with Cyrus SASL"
    "$dir/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$@" python-qpid-proton
  fi
  say "$dir: $("$dir/bin/python" -c 'import sys, koji, proton, psycopg2
print("Python", sys.version.split()[0], "koji", koji.__version__ if hasattr(koji, "__version__") else "?",
      "proton", ".".join(map(str, proton.VERSION)), "psycopg2", psycopg2.__version__.split()[0])')"
}

make_venv .venv39 3.9 -c scripts/constraints-el9.txt
make_venv .venv313 3.13
