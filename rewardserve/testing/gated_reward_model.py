"""A gated multi-objective reward model shaped like ArmoRM-Llama3-8B-v0.1's modeling code, for the
tests: written into a checkpoint directory as `modeling_gated.py` (its `token_pattern` filled
in with the test tokenizer's ids) and loaded by transformers with trust_remote_code, as ArmoRM is.

As ArmoRM: a regression layer gives the objectives at the last token; a gating MLP reads the
hidden state where the last assistant header starts (found by a Python loop over the ids) and
weighs the objectives, after a transform matrix, into the score.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput

token_pattern = []  # the assistant header's token ids; build_gated_rm writes them here


class GatingNetwork(nn.Module):
    def __init__(self, in_features, out_features, temperature=10, hidden_dim=1024, n_hidden=3):
        super().__init__()
        self.temperature = temperature
        layers = []
        for _ in range(n_hidden):
            layers.append(nn.Linear(in_features, hidden_dim))
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, out_features))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return torch.softmax(x / self.temperature, dim=1)


def find_token_for_gating(ids):
    """The start of the last occurrence of token_pattern."""
    for j in range(len(ids) - len(token_pattern), -1, -1):
        if ids[j : j + len(token_pattern)] == token_pattern:
            return j
    raise ValueError("Token pattern not found in the list.")


@dataclass
class CustomOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    gating_output: torch.FloatTensor = None
    score: torch.FloatTensor = None


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.num_objectives = config.num_objectives
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        self.post_init()
        self.reward_transform_matrix = nn.Parameter(torch.eye(self.num_objectives), requires_grad=False)
        self.gating = GatingNetwork(
            config.hidden_size,
            self.num_objectives,
            temperature=config.gating_temperature,
            hidden_dim=config.gating_hidden_dim,
            n_hidden=config.gating_n_hidden,
        )

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids)[0]
        batch = torch.arange(input_ids.shape[0], device=hidden.device)
        # the last token before the first pad (the last one when there is no pad)
        lengths = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        rewards = self.regression_layer(hidden[batch, lengths])
        positions = [find_token_for_gating(ids.tolist()) for ids in input_ids]
        gating_output = self.gating(hidden[batch, positions, :])
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1)
        return CustomOutput(rewards=rewards, gating_output=gating_output, score=score)
