"""verl's reward loop (verl >= 0.9), with no dataset glue: a reward manager that scores each
rollout on a rewardserve server, the prompt taken from the sample's own `raw_prompt`.

    reward.reward_manager.source=importlib
    reward.reward_manager.module.path=pkg://rewardserve.client.verl_manager
    reward.reward_manager.name=RewardServeManager
    +reward.reward_kwargs.url=http://reward:8000     # or REWARDSERVE_URL (and REWARDSERVE_API_KEY)

Leave `reward.reward_model.enable` false and `reward.custom_reward_function.path` unset: the
reward loop then hands every sample to this manager. For each sample it decodes the response
as verl's own managers do (padding cut by the attention mask, special tokens skipped), appends
it to `raw_prompt` as the assistant turn and sends the conversation to `/score`, where the
reward model's own template renders it. Many samples are in flight at once, one request each;
the server batches them, and shares the prompt of a GRPO group where it can.

verl reads `reward_score` as the reward; `reward_extra_info` holds `score` again, a
multi-objective model's objectives and a process reward model's `step_reward_mean`,
`step_reward_min` and `steps`, which verl logs per sample. Failures are retried as
`RewardClient` retries them (a refused connection, 429, 502, 503, 504).

This module imports verl: verl loads it. The reward function in `verl.py` needs no verl.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from rewardserve.client.http import AsyncRewardClient
from rewardserve.client.verl import connect_async, score_item, scored_results


class RewardServeManager(RewardManagerBase):
    """Scores each sample's `raw_prompt` + decoded response on a rewardserve server."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        kwargs = config.reward.get("reward_kwargs") or {}
        self.url: str | None = kwargs.get("url")
        self.api_key: str | None = kwargs.get("api_key")

    @property
    def client(self) -> AsyncRewardClient:
        # one pooled client per event loop and server (verl.py)
        return connect_async(self.url, self.api_key)

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1]  # a multi-turn sample is scored on its last sequence, as verl's managers do
        # The sample's ground truth goes as the label, for a composed reward's rules.
        truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        scored = score_item(await self._response(item), {"prompt": self._prompt(item)}, truth)
        (result,) = scored_results(await self.client.score_detailed([scored]))
        return {"reward_score": result["score"], "reward_extra_info": result}

    @staticmethod
    def _prompt(item: Any) -> list[dict[str, Any]]:
        if "raw_prompt" not in item.non_tensor_batch:
            raise ValueError(
                "the sample has no raw_prompt: keep data.return_raw_chat=True (verl's default with the reward loop)"
            )
        return list(item.non_tensor_batch["raw_prompt"])

    async def _response(self, item: Any) -> str:
        """The response's text, as verl's naive manager decodes it (on a thread: it holds the GIL)."""
        ids = item.batch["responses"]
        length = int(item.batch["attention_mask"][-ids.shape[-1] :].sum())
        return await self.loop.run_in_executor(
            None, lambda: self.tokenizer.decode(ids[:length], skip_special_tokens=True)
        )
