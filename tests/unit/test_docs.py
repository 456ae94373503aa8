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
