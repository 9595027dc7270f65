"""Schema-driven fuzzing: schemathesis generates requests from the server's own OpenAPI document
(valid ones and, in its negative mode, invalid ones: wrong types, missing fields, odd strings
and headers) against a real server on loopback with API keys set. None may get a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from live import free_port, running

from rewardserve.service import Settings

KEY = "fuzzing-key"
EXAMPLES_PER_OPERATION = 100  # 16 operations: over 1,000 requests in about half a minute


def test_over_a_thousand_generated_requests_get_no_5xx(tiny_bundle, tmp_path: Path):
    settings = Settings(bundle=tiny_bundle, port=free_port(), api_keys=KEY, max_items_per_request=64)
    with running(settings) as server:
        fuzz = subprocess.run(
            [
                Path(sys.executable).with_name("schemathesis"),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {KEY}",
                # A deadline the client makes too short is answered 504 by design (tested in
                # test_reliability.py; bad values are 422s in test_hostile_input.py): pin it.
                "--header",
                "X-Request-Timeout: 60",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--seed",
                "0",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,  # its cache of cases
        )
        metrics = httpx.get(f"{server.url}/metrics").text
    assert fuzz.returncode == 0, fuzz.stdout[-4000:]
    by_status: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("rewardserve_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            by_status[status] = by_status.get(status, 0) + float(line.split()[-1])
    print(f"fuzzing: {sum(by_status.values()):.0f} requests, by status {by_status}")
    assert sum(by_status.values()) >= 1000, by_status
    assert not [status for status in by_status if status.startswith("5")], by_status
