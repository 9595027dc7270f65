"""Hostile input against a real server on loopback with API keys set: every row gets its
documented 4xx, naming the field, and the server serves on without a single 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from live import Server, free_port, serve

from rewardserve.service import Settings

KEY = "key-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}
JSON = {**AUTH, "content-type": "application/json"}
ITEM = {"prompt": "\n\nHuman: Hi", "response": "Hello!"}
MIB = 2**20


@pytest.fixture(scope="module")
def server(tiny_bundle) -> Iterator[Server]:
    # Default limits: the table checks the documented ones.
    yield from serve(Settings(bundle=tiny_bundle, port=free_port(), api_keys=KEY), headers=AUTH)


def chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked, without a Content-Length to refuse it by."""
    for _ in range(total // MIB):
        yield b" " * MIB


# (case, request arguments, status, error_type, start of the message)
HOSTILE = [
    ("body over 16 MiB", dict(content=b" " * (17 * MIB), headers=JSON), 413, "body_too_large", "body: 17825792 bytes"),
    ("chunked body over 16 MiB", dict(content=chunks(17 * MIB), headers=JSON), 413, "body_too_large", "body: more"),
    ("10^5 items", dict(json={"items": [ITEM] * 10**5}, headers=AUTH), 413, "too_many_items", "items: 100000 items"),
    (
        "10^6-character text",
        dict(json={"items": [ITEM, {"prompt": "p", "response": "x" * 10**6}]}, headers=AUTH),
        413,
        "text_too_long",
        "items[1].response: 1000000 characters",
    ),
    (
        "over the model's length with truncate false",
        dict(json={"items": [{"prompt": "p", "response": "word " * 400}], "truncate": False}, headers=AUTH),
        413,
        "sequence_too_long",
        "items[0]: 404 tokens, over the model's 128",
    ),
    (
        "JSON nested 10^5 deep",
        dict(content=b'{"items": ' + b"[" * 10**5 + b"]" * 10**5 + b"}", headers=JSON),
        400,
        "bad_request",
        "body: JSON nested too deeply",
    ),
    (
        "nested lists where items go",
        dict(json={"items": [[[[ITEM]]]]}, headers=AUTH),
        422,
        "validation_error",
        "items[0]: Input should be a valid dictionary",
    ),
    ("items not a list", dict(json={"items": "p"}, headers=AUTH), 422, "validation_error", "items: Input should be"),
    (
        "a number for a text",
        dict(json={"items": [{"prompt": "p", "response": 3}]}, headers=AUTH),
        422,
        "validation_error",
        "items[0].response: Input should be a valid string",
    ),
    (
        "NaN for a flag",
        dict(content=b'{"items": [{"prompt": "p", "response": "r"}], "truncate": NaN}', headers=JSON),
        422,
        "validation_error",
        "truncate: Input should be a valid boolean",
    ),
    ("empty items", dict(json={"items": []}, headers=AUTH), 422, "validation_error", "items: List should have"),
    ("no body", dict(headers=JSON), 422, "validation_error", "body: Field required"),
    ("invalid JSON", dict(content=b'{"items": [', headers=JSON), 422, "validation_error", "body: invalid JSON"),
    (
        "invalid UTF-8",
        dict(content=b'{"items": [{"prompt": "\xff\xfe", "response": "r"}]}', headers=JSON),
        400,
        "bad_request",
        "body: not valid UTF-8",
    ),
    (
        "a lone surrogate",
        dict(content=b'{"items": [{"prompt": "p", "response": "\\ud800"}]}', headers=JSON),
        422,
        "validation_error",
        "items[0].response: not valid Unicode text",
    ),
    (
        "NaN deadline",
        dict(json={"items": [ITEM]}, headers={**AUTH, "X-Request-Timeout": "nan"}),
        422,
        "validation_error",
        "header x-request-timeout: Input should be a finite number",
    ),
    (
        "negative deadline",
        dict(json={"items": [ITEM]}, headers={**AUTH, "X-Request-Timeout": "-1"}),
        422,
        "validation_error",
        "header x-request-timeout: Input should be greater than 0",
    ),
    ("no API key", dict(json={"items": [ITEM]}), 401, "unauthorized", "missing API key"),
    (
        "a wrong API key",
        dict(json={"items": [ITEM]}, headers={"Authorization": "Bearer nope"}),
        401,
        "unauthorized",
        "invalid API key",
    ),
    (
        "Basic instead of Bearer",
        dict(json={"items": [ITEM]}, headers={"Authorization": f"Basic {KEY}"}),
        401,
        "unauthorized",
        "invalid API key",
    ),
]


@pytest.mark.parametrize(
    ("case", "request_args", "status", "error_type", "message"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_input_gets_its_documented_4xx_naming_the_field(
    server, case, request_args, status, error_type, message
):
    response = httpx.post(f"{server.url}/score", timeout=60, **request_args)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_type"] == error_type
    assert body["error"].startswith(message), body["error"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="rewardserve"')


def test_compare_names_the_response_over_the_models_length(server):
    item = {"prompt": "p", "a": "short", "b": "word " * 400}
    response = httpx.post(f"{server.url}/compare", json={"items": [item, item], "truncate": False}, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"].startswith("items[0].b: 404 tokens")


def test_after_the_hostile_table_the_server_still_serves_and_never_answered_5xx(server):
    assert httpx.post(f"{server.url}/score", json={"items": [ITEM]}, headers=AUTH).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("rewardserve_requests_total{")]
    assert counted and not [line for line in counted if 'status="5' in line]
