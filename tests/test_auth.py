"""API keys: several, from the environment or a file re-read on change; probes open; /metrics
open or protected; keys never in a log line, a repr or the OpenAPI document."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from live import free_port, running

from rewardserve.service import Settings
from rewardserve.service.auth import ApiKeys, KeysFileError

ITEMS = {"items": [{"prompt": "\n\nHuman: Hi", "response": "Hello!"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_everything_is_open(tiny_bundle):
    with running(Settings(bundle=tiny_bundle, port=free_port())) as server:
        assert httpx.post(f"{server.url}/score", json=ITEMS).status_code == 200
        assert "security" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]["/score"]["post"]


def test_any_of_several_keys_opens_the_api_while_probes_docs_and_metrics_stay_open(tiny_bundle, caplog):
    settings = Settings(bundle=tiny_bundle, port=free_port(), api_keys="first-key, second-key")
    assert "first-key" not in repr(settings) and "first-key" not in str(settings.model_dump())
    with caplog.at_level(logging.DEBUG), running(settings) as server:
        for key in ("first-key", "second-key"):
            assert httpx.post(f"{server.url}/score", json=ITEMS, headers=bearer(key)).status_code == 200
        assert httpx.post(f"{server.url}/score", json=ITEMS, headers=bearer("first-ke")).status_code == 401
        assert httpx.post(f"{server.url}/compare", json={}, headers=bearer("x")).status_code == 401
        for path in ("/health", "/ready", "/docs", "/openapi.json", "/metrics"):
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
        schema = httpx.get(f"{server.url}/openapi.json").json()
        assert schema["paths"]["/score"]["post"]["security"] == [{"apiKey": []}]
        assert "security" not in schema["paths"]["/health"]["get"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'rewardserve_requests_total{endpoint="/score",status="401"} 1.0' in metrics
    logged = "\n".join(record.getMessage() + str(getattr(record, "fields", "")) for record in caplog.records)
    assert "first-key" not in logged and "second-key" not in logged and "first-ke" not in logged


def test_metrics_need_a_key_when_protected(tiny_bundle):
    settings = Settings(bundle=tiny_bundle, port=free_port(), api_keys="k", protect_metrics=True)
    with running(settings, headers=bearer("k")) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=bearer("k")).status_code == 200
        assert httpx.get(f"{server.url}/ready").status_code == 200


def test_keys_in_a_file_are_added_and_revoked_without_a_restart(tiny_bundle, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("# rotated by the deployment\nold-key\n")
    with running(Settings(bundle=tiny_bundle, port=free_port(), api_keys_file=keys)) as server:

        def status(key: str) -> int:
            return httpx.post(f"{server.url}/score", json=ITEMS, headers=bearer(key)).status_code

        assert (status("old-key"), status("new-key")) == (200, 401)
        # As a Kubernetes Secret rotates: a new file swapped in under the same name.
        (tmp_path / "keys.next").write_text("new-key\n")
        (tmp_path / "keys.next").replace(keys)
        assert (status("old-key"), status("new-key")) == (401, 200)
        keys.unlink()  # briefly missing mid-rotation: the last keys stay in force
        assert (status("old-key"), status("new-key")) == (401, 200)


def test_an_empty_keys_file_lets_nobody_in(tmp_path: Path):
    (tmp_path / "keys").write_text("\n# no keys yet\n")
    keys = ApiKeys(keys_file=tmp_path / "keys")
    assert keys.enabled and not keys.accepts("") and not keys.accepts("# no keys yet")


def test_a_missing_keys_file_at_start_up_is_an_error(tmp_path: Path):
    with pytest.raises(KeysFileError, match="absent: No such file"):
        ApiKeys(keys_file=tmp_path / "absent")
