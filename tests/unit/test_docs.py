"""README's generated parts are up to date with the code (run scripts/make-docs.py to fix)."""

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_readme_is_generated_from_the_code(tmp_path):
    readme = os.path.join(ROOT, "README.md")
    before = open(readme, encoding="utf-8").read()
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-docs.py")], check=True)
    after = open(readme, encoding="utf-8").read()
    if after != before:
        with open(readme, "w", encoding="utf-8") as fh:
            fh.write(before)
    assert after == before, "README.md is out of date: run .venv/bin/python scripts/make-docs.py"


def test_readme_and_ci_run_the_same_test_command():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "bash scripts/test.sh" in readme and "scripts/test.sh" in ci
    assert "bash scripts/demo.sh" in readme


def test_the_reliability_docs_name_what_the_tests_measure():
    """docs/reliability.md said duplicates come from a silent broker only; a hub process that exits
    before deleting its settled rows causes them too (bench/results.md counted 10).  Every test
    file it cites must exist."""
    import re

    text = open(os.path.join(ROOT, "docs", "reliability.md"), encoding="utf-8").read()
    assert "silent broker only" not in text
    assert "a silent broker" in text and "exits before deleting its settled rows" in text
    cited = set(re.findall(r"`(?:tests/integration/)?(test_\w+\.py)`", text))
    assert cited, "no test cited"
    for name in cited:
        assert os.path.exists(os.path.join(ROOT, "tests", "integration", name)), name
