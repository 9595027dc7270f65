"""`rewardserve train --objectives`: one Bradley-Terry head per objective on a shared model, each
learning from its own data sources' human preference pairs (HH's helpful and harmless files),
exported with a rule for the scalar reward and served with every objective."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from live import free_port, running
from safetensors.torch import load_file

from rewardserve.data.hh import HH_DIR
from rewardserve.data.preferences import load_preferences
from rewardserve.service import Settings
from rewardserve.training.config import TrainConfig

OBJECTIVES = "helpfulness=helpful-base+helpful-online,harmlessness=harmless-base"


def pairs(*files: str, split: str = "train"):
    return load_preferences([HH_DIR / f"{name}-test.jsonl.gz" for name in files], split=split)[0]


def train(base: Path, out: Path, examples, validation, **overrides) -> Path:
    from rewardserve.training.trainer import train_reward_model

    settings = dict(max_length=128, batch_size=4, max_steps=4, learning_rate=1e-3, weight_decay=0.0, seed=0)
    config = TrainConfig(base_model=str(base), output_dir=str(out), objectives=OBJECTIVES, **settings | overrides)
    train_reward_model(config, examples, validation, provenance={"data": "test"})
    return out


def head(checkpoint: Path) -> np.ndarray:
    return load_file(checkpoint / "reward_head.safetensors")["weight"].numpy()


def test_objectives_are_parsed_from_names_and_sources():
    config = TrainConfig(base_model="b", output_dir="o", objectives=OBJECTIVES + ",honesty")
    assert config.objective_sources() == {
        "helpfulness": ["helpful-base", "helpful-online"],
        "harmlessness": ["harmless-base"],
        "honesty": ["honesty"],
    }
    with pytest.raises(ValueError, match="two or more"):
        TrainConfig(base_model="b", output_dir="o", objectives="helpfulness").objective_sources()


def test_a_head_learns_only_from_its_own_objectives_pairs(tiny_base_model, tmp_path):
    helpful = pairs("helpful-base")[:16]
    untouched = train(tiny_base_model, tmp_path / "a", helpful, [], max_steps=0, epochs=0.0)
    trained = train(tiny_base_model, tmp_path / "b", helpful, [])
    before, after = head(untouched), head(trained)
    assert before.shape[0] == 2
    assert not np.allclose(before[0], after[0])  # helpfulness moved
    np.testing.assert_array_equal(before[1], after[1])  # harmlessness saw no pair


def test_data_from_a_source_no_objective_names_is_refused(tiny_base_model, tmp_path):
    from rewardserve.training.trainer import train_reward_model

    config = TrainConfig(
        base_model=str(tiny_base_model), output_dir=str(tmp_path), objectives="a=helpful-base,b=helpful-online"
    )
    with pytest.raises(ValueError, match="no objective takes the examples of harmless-base"):
        train_reward_model(config, pairs("harmless-base")[:4], [], provenance={})


def test_a_model_trained_on_objectives_exports_and_serves_each(tiny_base_model, tmp_path, heldout_pairs):
    from rewardserve.export.onnx_export import export_bundle
    from rewardserve.export.source import OutputOptions

    examples = pairs("helpful-base")[:16] + pairs("harmless-base")[:16]
    validation = pairs("helpful-base", "harmless-base", split="validation")[:8]
    checkpoint = train(tiny_base_model, tmp_path / "checkpoint", examples, validation)
    parity = [(e.prompt, r) for e in heldout_pairs[:128] for r in e.responses]
    with pytest.raises(ValueError, match="--reward-weights"):
        export_bundle(checkpoint, tmp_path / "refused", parity)
    options = OutputOptions(reward_weights=[0.5, 0.5])
    manifest = export_bundle(checkpoint, tmp_path / "bundle", parity, output_options=options)
    assert manifest.outputs.objectives.names == ["helpfulness", "harmlessness"]
    with running(Settings(bundle=tmp_path / "bundle", port=free_port())) as server:
        answer = httpx.post(f"{server.url}/score", json={"items": [{"prompt": "Hi", "response": "Hello"}]}).json()
    helpfulness, harmlessness = answer["objectives"]["helpfulness"][0], answer["objectives"]["harmlessness"][0]
    assert answer["rewards"][0] == pytest.approx(0.5 * helpfulness + 0.5 * harmlessness, abs=1e-5)
