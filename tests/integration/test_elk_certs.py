"""playbooks/elk_certs.yml, run for real, and its certificates checked with the real openssl.

What an operator relies on: the file holds a CA and a node certificate that chains to it
(`openssl verify`), a private key that matches the certificate, usable for TLS client and
server (extended key usage), the file is 0600, no PEM reaches the playbook's output, an
existing file is never overwritten, and the values make a valid prod model (3 nodes).
"""

import os
import subprocess

import yaml

from helpers import run

from ansible_collections.opsdeck.stack.plugins.module_utils.model.stack import normalize


def openssl(*args, stdin=None):
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_certificates_chain_match_and_stay_secret(tmp_path):
    out = tmp_path / "elk-certs.yml"
    first = run(["ansible-playbook", "playbooks/elk_certs.yml", "-e", "elk_certs_out=%s" % out], timeout=300)
    assert first.returncode == 0, first.stdout[-3000:]
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert "BEGIN" not in first.stdout and "PRIVATE KEY" not in first.stdout
    values = yaml.safe_load(out.read_text())
    assert set(values) == {"vault_elastic_transport_ca_crt", "vault_elastic_transport_crt",
                           "vault_elastic_transport_key", "vault_elastic_transport_ca_key"}
    for name, value in values.items():
        (tmp_path / name).write_text(value)
    names = ("vault_elastic_transport_ca_crt", "vault_elastic_transport_crt", "vault_elastic_transport_key")
    ca, crt, key = (str(tmp_path / n) for n in names)
    assert openssl("verify", "-CAfile", ca, crt).strip().endswith(": OK")
    # the key is the certificate's
    assert openssl("pkey", "-in", key, "-pubout") == openssl("x509", "-in", crt, "-noout", "-pubkey")
    text = openssl("x509", "-in", crt, "-noout", "-text")
    assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    assert "DNS:es-0" in text and "DNS:es-2" in text
    assert "CA:TRUE" in openssl("x509", "-in", ca, "-noout", "-text")
    assert values["vault_elastic_transport_key"].startswith("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM"

    # never overwritten
    before = out.read_text()
    second = run(["ansible-playbook", "playbooks/elk_certs.yml", "-e", "elk_certs_out=%s" % out], timeout=300)
    assert second.returncode != 0 and "certificates are never overwritten" in second.stdout
    assert out.read_text() == before

    # the three values make a valid prod model with a 3-node cluster
    # Prod refuses weak secrets: these are long and varied enough to pass its rule.
    secrets = {"elastic_password": "Elastic-9f3Kq7-pass", "kibana_system_password": "Kibana-4Tz8w2-pass",
               "logstash_writer_password": "Logstash-7Hn5v1-pass", "admin_token": "Admin-6Rj2m8-token"}
    secrets.update({name[len("vault_"):]: value for name, value in values.items() if "ca_key" not in name})
    model = normalize({"name": "shop", "environment": "prod", "target": "compose",
                       "services": [{"name": "api", "image": "opsdeck/refapp:0.1.0", "port": 8000,
                                     "route": {"path": "/"}}],
                       "logging": {"enabled": True}, "secrets": secrets})
    assert model["logging"]["elasticsearch"]["nodes"] == 3
