"""HTTPS through the whole system: ``chaperon run`` with an https base_url.

A small HTTPS server (``support.servers.https_script_server``: Python's ssl and http.server,
keep-alive HTTP/1.1) on 127.0.0.1 serves
a certificate the test makes; the load test names ``https://localhost:PORT`` and the CA with
``config.tls_ca_file``. Without the CA every request fails verification, counted as ``tls``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.certs import make_certs
from support.procs import chaperon_command, python_env
from support.servers import https_script_server


def _run(tmp_path: Path, config: dict) -> dict:
    spec = tmp_path / "https.json"
    spec.write_text(
        json.dumps(
            {
                "name": "https",
                "config": config,
                "scenarios": [
                    {
                        "concurrency": 3,
                        "iterations": 10,
                        "scenario": {"run": [{"http": {"method": "GET", "path": "/"}}]},
                    }
                ],
            }
        )
    )
    done = subprocess.run(
        [*chaperon_command(), "run", str(spec), "--json", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_https_run_verifies_against_the_given_ca(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    with https_script_server(certs.server_cert, certs.server_key) as port:
        run = _run(
            tmp_path,
            {"base_url": f"https://localhost:{port}", "tls_ca_file": str(certs.ca_cert)},
        )
        assert run["state"] == "SUCCEEDED", run.get("error")
        (metric,) = run["result"]["metrics"]
        assert metric["key"] == "GET /"
        assert int(metric["count"]) == 30 and int(metric.get("errors", 0)) == 0

        unverified = _run(tmp_path, {"base_url": f"https://localhost:{port}"})
        (metric,) = unverified["result"]["metrics"]
        assert metric["errorsByKind"] == {"tls": "30"}

        insecure = _run(tmp_path, {"base_url": f"https://localhost:{port}", "tls_insecure": True})
        (metric,) = insecure["result"]["metrics"]
        assert int(metric["count"]) == 30 and int(metric.get("errors", 0)) == 0


def test_a_ca_file_the_worker_cannot_read_fails_the_run_clearly(tmp_path: Path) -> None:
    run = _run(
        tmp_path,
        {"base_url": "https://localhost:9", "tls_ca_file": str(tmp_path / "missing.pem")},
    )
    assert run["state"] == "FAILED"
    assert "refused the assignment" in run["error"] and "tls_ca_file" in run["error"]
