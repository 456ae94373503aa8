"""The docs site's generated pages are up to date with the code (run scripts/make-docs.py to fix),
README stays a short front page, and README and CI run the same commands."""

import filecmp
import glob
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DOCS = os.path.join(ROOT, "docs")


def test_generated_pages_are_up_to_date(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-docs.py"), str(tmp_path)], check=True)
    made = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / "**" / "*.md"), recursive=True))
    assert "configuration.md" in made and "benchmarks.md" in made and "messages/Tag.md" in made
    stale = [name for name in made
             if not os.path.exists(os.path.join(DOCS, name))
             or not filecmp.cmp(os.path.join(DOCS, name), tmp_path / name, shallow=False)]
    assert not stale, f"out of date: {stale}: run .venv/bin/python scripts/make-docs.py"
    kept = sorted(os.path.relpath(p, DOCS) for p in glob.glob(os.path.join(DOCS, "messages", "*.md")))
    assert kept == [n for n in made if n.startswith("messages/")], "docs/messages/ holds a page of no message type"


def test_a_changed_option_makes_the_drift_test_fail(tmp_path):
    """The comparison above sees a change (shown on a copy of the configuration page)."""
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-docs.py"), str(tmp_path)], check=True)
    page = tmp_path / "configuration.md"
    page.write_text(page.read_text().replace("koji.events", "koji.other"))
    assert not filecmp.cmp(os.path.join(DOCS, "configuration.md"), page, shallow=False)


def test_every_message_page_shows_a_real_example_that_matches_its_schema():
    for msg_type in ("Tag", "RepoInit", "Import"):
        with open(os.path.join(DOCS, "messages", f"{msg_type}.md"), encoding="utf-8") as fh:
            page = fh.read()
        assert "## A real example" in page and f"urn:koji-messagebus:message:{msg_type}:" in page


def test_readme_is_a_short_front_page_linking_the_docs():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert len(readme.splitlines()) <= 150
    for page in ("install", "configuration", "messages", "cookbook", "reliability", "security", "cli", "benchmarks"):
        assert f"(docs/{page}.md)" in readme and os.path.exists(os.path.join(DOCS, f"{page}.md")), page


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
