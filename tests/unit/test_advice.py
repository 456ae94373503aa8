"""The weak spots of a valid config are warned about, each with its fix."""

from __future__ import annotations

import os

from koji_messagebus.config.settings import load_config
from tests.support.conffile import MINIMAL, conf, parsed


def test_warnings_plain_without_tls_and_readable_password(tmp_path):
    path = conf(tmp_path, MINIMAL, mode=0o644)
    cfg = load_config(path)
    text = "\n".join(cfg.warnings)
    assert "auth = PLAIN without TLS" in text
    assert f"{path} (config file) holds a password and is readable by other users" in text
    assert f"chmod 600 {path}" in text
    assert not load_config(conf(tmp_path, MINIMAL + "ssl = true\n")).warnings


def test_ip_address_with_verified_tls_is_warned(tmp_path):
    cfg = parsed(tmp_path, host="10.0.0.5", ssl="true", username="u", password="p")
    assert any("TLS to 10.0.0.5: proton checks the broker's certificate against DNS names only" in w
               for w in cfg.warnings)
    assert not any("DNS names only" in w
                   for w in parsed(tmp_path, host="broker.example.com", ssl="true", username="u",
                                   password="p").warnings)


def test_combined_pem_readable_by_others_is_warned(tmp_path):
    pem = tmp_path / "hub.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                   "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    os.chmod(pem, 0o644)
    cfg = parsed(tmp_path, host="broker", ssl="true", auth="EXTERNAL", cert=str(pem))
    assert any(f"{pem} (cert) holds a private key and is readable by other users" in w and f"chmod 600 {pem}" in w
               for w in cfg.warnings)
    os.chmod(pem, 0o600)
    assert not parsed(tmp_path, host="broker", ssl="true", auth="EXTERNAL", cert=str(pem)).warnings


def test_readable_password_file_is_warned_with_the_fix(tmp_path):
    pw = tmp_path / "messagebus.password"
    pw.write_text("S3cret-in-file\n")
    os.chmod(pw, 0o644)
    cfg = parsed(tmp_path, host="broker", ssl="true", username="koji", password_file=str(pw))
    text = "\n".join(cfg.warnings)
    assert f"{pw} (password_file) holds a password and is readable by other users" in text
    assert f"chmod 600 {pw}" in text and "S3cret-in-file" not in text
