"""verl's own reward loop (verl 0.9, `RewardLoopWorker`), built as verl's trainer builds it from
its config, scoring rollouts one sample at a time as verl's agent loop hands them over."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

MANAGER = {
    "source": "importlib",
    "name": "RewardServeManager",
    "module": {"path": "pkg://rewardserve.client.verl_manager"},
}


def config(policy: Path, *, url: str | None = None, reward_model: Path | None = None, engine: str = "vllm") -> Any:
    """A trainer config whose reward loop uses rewardserve's manager (`url`), or verl's own
    reward-model client (`reward_model`: the checkpoint whose tokenizer renders conversations)."""
    reward = {
        "reward_model": {
            "enable": reward_model is not None,
            "model_path": None if reward_model is None else str(reward_model),
            "rollout": {"name": engine},
        },
        "custom_reward_function": {"path": None, "name": None},
        "reward_manager": MANAGER,
        "reward_kwargs": {"url": url},
    }
    policy_model = {"path": str(policy), "tokenizer_path": None}
    return OmegaConf.create({"actor_rollout_ref": {"model": policy_model}, "reward": reward})


def sample(tokenizer: Any, conversation: list[dict], padding: int = 3) -> DataProto:
    """One rollout: the prompt's ids (left-padded), the response's (its EOS, then right padding),
    the attention mask over both, and the prompt's messages as `raw_prompt`."""
    prompt = tokenizer.apply_chat_template(conversation[:-1], add_generation_prompt=True)["input_ids"]
    response = tokenizer(conversation[-1]["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    responses = torch.tensor([response + [pad] * padding])
    mask = torch.tensor([[1] * len(prompt) + [1] * len(response) + [0] * padding])
    raw_prompt = np.empty(1, dtype=object)
    raw_prompt[0] = conversation[:-1]
    return DataProto.from_dict(
        tensors={"prompts": torch.tensor([prompt]), "responses": responses, "attention_mask": mask},
        non_tensors={"raw_prompt": raw_prompt},
    )


def scores(config: Any, tokenizer: Any, conversations: list[list[dict]], router: str | None = None) -> list[dict]:
    """verl's worker's answer for each conversation, all in flight at once as in a GRPO step."""

    async def step() -> list[dict]:
        worker = RewardLoopWorker(config, reward_router_address=router)
        return await asyncio.gather(*(worker.compute_score(sample(tokenizer, c)) for c in conversations))

    return asyncio.run(step())
