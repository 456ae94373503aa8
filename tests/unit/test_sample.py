"""The sample config documents every option with its default."""

from __future__ import annotations

import configparser
import os

from koji_messagebus.config.options import OPTIONS

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_sample_conf_documents_every_key_with_its_default():
    parser = configparser.RawConfigParser()
    sample = os.path.join(ROOT, "koji_messagebus", "data", "messagebus.conf")
    text = open(sample).read()
    parser.read_string(text)
    for opt in OPTIONS:
        assert parser.has_section(opt.section), opt.section
        assert f"\n#{opt.key} = " in text, f"[{opt.section}] {opt.key} not documented in the sample config"
    assert parser.get("outbox", "enabled") == "true"
