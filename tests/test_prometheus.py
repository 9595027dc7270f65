"""The monitoring we ship, against a real Prometheus: the `prometheus` binary (Debian's package,
which also brings promtool) scrapes a live server of a decoder bundle with prompt reuse, under
GRPO-like traffic with cache hits, a 429 and a 504, and evaluates every alert rule of
k8s/monitoring/prometheusrule.yaml and every query of the Grafana dashboard. Each must
evaluate without error and to data: a rule or panel that names a series nobody exports, or
that divides by a series absent under real traffic, shows nothing to the operator who needs it.
(test_deploy.py checks the same files with promtool, on synthetic series.)"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from live import free_port, hold_engine, post_in_background, running, wait_for
from test_deploy import alert_rules, dashboard_queries, tool

from rewardserve.service import Settings

NAMESPACE = "rewardserve"
RATE_INTERVAL = "30s"  # Grafana's $__rate_interval, over 1 s scrapes
PROMPT = [{"role": "user", "content": "Explain in detail how a bicycle stays upright when it is moving fast."}]
RESPONSES = ["Gyroscopic effects help.", "Mostly steering geometry: the trail.", "It just does.", "Speed."]


@pytest.fixture(scope="module")
def server(trained_decoder_bundle):
    settings = Settings(
        bundle=trained_decoder_bundle,
        port=free_port(),
        cache_size=256,
        prefix_min_tokens=20,  # the group prompt is over it; "Hi" (held at the engine for a 429) is under
        max_items_per_request=16,
        max_queued_sequences=32,
    )
    with running(settings) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(server, tmp_path_factory) -> Iterator[str]:
    """Prometheus scraping the server every second and evaluating the alert rules as often."""
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "rules.yaml").write_text(yaml.safe_dump(alert_rules()))
    target = server.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "rewardserve",
                # the labels the ServiceMonitor's scrape gives a replica's series
                "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE, "pod": "rewardserve-0"}}],
            }
        ],
    }
    (folder / "prometheus.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        tool("prometheus", "Debian's prometheus package"),
        f"--config.file={folder / 'prometheus.yaml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{url}/-/ready"), "Prometheus", timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def query(prometheus: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}).json()
    assert answer["status"] == "success", (promql, answer)
    return answer["data"]["result"]


def grpo_traffic(url: str) -> None:
    """Groups of responses to one prompt (prompt reuse), a repeated group (cache hits), a short
    prompt (run whole), a 504 and a 422."""
    group = {"items": [{"messages": [*PROMPT, {"role": "assistant", "content": r}]} for r in RESPONSES]}
    for _ in range(2):
        assert httpx.post(f"{url}/score", json=group, timeout=60).status_code == 200
    short = {"items": [{"prompt": "Hi", "response": "Hello"}]}
    assert httpx.post(f"{url}/score", json=short, timeout=60).status_code == 200
    late = httpx.post(f"{url}/score", json=short, headers={"X-Request-Timeout": "0.000001"}, timeout=60)
    assert late.status_code == 504
    assert httpx.post(f"{url}/score", json={"items": []}).status_code == 422


@pytest.fixture(scope="module")
def scraped(server, prometheus) -> str:
    """Prometheus, once it holds a few scrapes of the traffic and of a 429."""
    body = {"items": [{"prompt": "Hi", "response": f"answer {i}"} for i in range(16)]}
    gate, first, _ = hold_engine(server, body)  # 16 of the 32 sequences the queue holds
    second, _ = post_in_background(server.url, body)
    admission = server.pipeline.admission
    wait_for(lambda: admission.in_flight_sequences == 32, "the queue full")  # before the third asks
    refused = httpx.post(f"{server.url}/score", json=body)
    gate.opened.set()
    first.join(), second.join()
    assert refused.status_code == 429
    started = time.monotonic()
    while time.monotonic() - started < 8:  # traffic over several scrapes, for rate()
        grpo_traffic(server.url)
        time.sleep(0.5)
    wait_for(lambda: _scrapes(prometheus) >= 8, "eight scrapes", timeout=30)
    time.sleep(2)  # a rule evaluation after the last traffic
    return prometheus


def _scrapes(prometheus: str) -> float:
    result = query(prometheus, 'count_over_time(up{job="rewardserve"}[1m])')
    return float(result[0]["value"][1]) if result else 0.0


def test_prefix_reuse_is_on_so_its_panels_have_data(server):
    assert server.metric("rewardserve_prefix_reuse") == 1, "the bundle runs without prompt reuse here"


def test_every_alert_rule_evaluates_without_error(scraped):
    rules = httpx.get(f"{scraped}/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {r["alert"] for g in alert_rules()["groups"] for r in g["rules"]}
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []


@pytest.mark.parametrize("rule", [r for g in alert_rules()["groups"] for r in g["rules"]], ids=lambda r: r["alert"])
def test_every_alert_rule_has_data_to_judge(scraped, rule):
    # `a > b` keeps only the series that fire; `a > bool b` answers 0 or 1 for every series it
    # judged, so an empty answer means no data, not no alert.
    judged = re.sub(r"\s>\s", " > bool ", rule["expr"].strip(), count=1)
    assert query(scraped, judged), f"{rule['alert']} has no data to judge: {rule['expr']}"


@pytest.mark.parametrize("promql", dashboard_queries())
def test_every_dashboard_query_has_data(scraped, promql):
    filled = promql.replace("$namespace", NAMESPACE).replace("$__rate_interval", RATE_INTERVAL)
    assert query(scraped, filled), f"no data: {filled}"
