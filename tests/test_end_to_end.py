"""Train -> export -> serve: served rewards equal PyTorch's, alone and inside mixed-length batches."""

import asyncio
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from live import free_port, wait_until_ready
from transformers import AutoTokenizer

from rewardserve.service import Settings, create_app
from rewardserve.training.reward_model import load_reward_model

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def mixed_items(heldout_pairs, tiny_checkpoint):
    """32 real held-out items of mixed lengths that fit the tiny model's 128 tokens untruncated."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    items = []
    for pair in heldout_pairs:
        for response in pair.responses:
            if len(tokenizer(pair.prompt, response)["input_ids"]) <= 128:
                items.append({"prompt": pair.prompt, "response": response})
    lengths = [len(tokenizer(i["prompt"], i["response"])["input_ids"]) for i in items[:32]]
    assert len(items) >= 32 and max(lengths) > 2 * min(lengths), "need mixed lengths"
    return items[:32]


@pytest.fixture(scope="module")
def torch_rewards(tiny_checkpoint, mixed_items):
    """Rewards from the trained checkpoint through transformers' own tokenizer, one item at a time."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = load_reward_model(tiny_checkpoint).eval()
    with torch.inference_mode():
        return np.array(
            [
                model(**tokenizer(i["prompt"], i["response"], return_tensors="pt")).logits[0, 0].item()
                for i in mixed_items
            ]
        )


def test_served_rewards_equal_pytorch_alone_and_in_a_mixed_length_batch(tiny_bundle, mixed_items, torch_rewards):
    # No cache: the second pass must run the engine again, one sequence per call.
    with TestClient(create_app(Settings(bundle=tiny_bundle, cache_size=0))) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.05)
        batched = np.array(client.post("/score", json={"items": mixed_items}).json()["rewards"])
        alone = np.array([client.post("/score", json={"items": [i]}).json()["rewards"][0] for i in mixed_items])
    assert np.abs(alone - torch_rewards).max() <= TOLERANCE
    assert np.abs(batched - torch_rewards).max() <= TOLERANCE
    assert np.abs(batched - alone).max() <= TOLERANCE


@pytest.fixture(scope="module")
def server(tiny_bundle):
    """`rewardserve serve` as its own process on loopback."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rewardserve.cli", "serve", "--bundle", str(tiny_bundle), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def alive() -> None:
        assert process.poll() is None, process.stdout.read().decode()

    wait_until_ready(url, timeout=60, check=alive)
    yield process, url
    process.terminate()
    process.wait(timeout=30)


def test_serving_process_has_no_torch_loaded(server):
    process, _ = server
    with open(f"/proc/{process.pid}/maps") as maps:
        libraries = {line.split()[-1] for line in maps if "/" in line}
    assert any("onnxruntime" in lib for lib in libraries)
    assert not [lib for lib in libraries if "torch" in os.path.basename(lib) or "/torch/" in lib]


def test_concurrent_requests_share_engine_calls_and_each_gets_its_own_rewards(server, mixed_items, torch_rewards):
    _, url = server

    async def fire():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/score", json={"items": [item]}) for item in mixed_items))
            metrics = (await client.get("/metrics")).text
        return [r.json()["rewards"][0] for r in responses], metrics

    rewards, metrics = asyncio.run(fire())
    assert np.abs(np.array(rewards) - torch_rewards).max() <= TOLERANCE
    engine_calls = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("rewardserve_batch_size_count"))
    )
    assert engine_calls < len(mixed_items)
