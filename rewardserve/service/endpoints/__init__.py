"""The scoring endpoints, one file each: a body schema, how it reads into the sequences to
score, and how their scores become its answer (`base.Endpoint`). Every endpoint runs through
the one pipeline (`scoring/pipeline.py`); `routes.py` mounts each at its paths.

To add an endpoint: write an Endpoint subclass in its own file and list it in ENDPOINTS.
"""

from rewardserve.service.endpoints.base import Endpoint
from rewardserve.service.endpoints.classify import Classify
from rewardserve.service.endpoints.compare import Compare
from rewardserve.service.endpoints.embeddings import Embeddings
from rewardserve.service.endpoints.get_reward import GetReward
from rewardserve.service.endpoints.pooling import Pooling
from rewardserve.service.endpoints.score import Score
from rewardserve.service.endpoints.slime import Slime, SlimeDetails

ENDPOINTS: tuple[Endpoint, ...] = (
    Score(),  # rewardserve's own
    Compare(),
    GetReward(),  # OpenRLHF
    Classify(),  # vLLM's pooling API (verl's reward loop)
    Pooling(),
    Embeddings(),  # SGLang's answer for a reward model (verl with an SGLang backend)
    Slime(),  # slime's remote reward model
    SlimeDetails(),
)

SCORING_PATHS = frozenset(path for endpoint in ENDPOINTS for path in endpoint.paths)

__all__ = ["ENDPOINTS", "SCORING_PATHS", "Endpoint"]
