"""What routers and clients ask a replica about itself before sending it work: the model it
serves (`/v1/models`, OpenAI's list; `/model_info`, as SGLang answers it), how busy it is
(`/get_load`, which the vLLM Router's power-of-two policy compares), and how it runs
(`/server_info`). SGLang's Model Gateway asks a worker for `/health`, `/server_info` and
`/model_info` when it registers it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from rewardserve import __version__
from rewardserve.scoring.build import resident_mib
from rewardserve.scoring.models import Served, ServedModels

router = APIRouter()

# When this process started: OpenAI's `created` of the model it serves.
STARTED = int(time.time())


def _models(request: Request) -> ServedModels:
    return request.app.state.models


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    """The models served, in OpenAI's list, the default first (with one, any name is accepted
    in a request's `model`)."""
    return {"object": "list", "data": [_listed(pipeline) for pipeline in _models(request)]}


def _listed(pipeline: Served) -> dict[str, Any]:
    return {
        "id": pipeline.model.model_name,
        "object": "model",
        "created": STARTED,
        "owned_by": "rewardserve",
        "root": pipeline.model.model_name,
        "max_model_len": pipeline.max_length,
    }


@router.get("/get_load")
async def load(request: Request) -> dict[str, int]:
    """Sequences admitted and not yet answered, over every model (the vLLM Router's power-of-two
    policy compares them)."""
    return {"load": _models(request).in_flight_sequences}


@router.get("/model_info")
async def model_info(request: Request, model: str | None = None) -> dict[str, Any]:
    """The model (`?model=`; default: the first), as SGLang describes one: a reward model, not a generator."""
    pipeline = _models(request).pick(model)
    labels = pipeline.model.labels
    return {
        "model_path": pipeline.model.model_name,
        "tokenizer_path": pipeline.model.model_name,
        "served_model_name": pipeline.model.model_name,
        "is_generation": False,
        "model_type": "reward",
        "max_context_length": pipeline.max_length,
        "id2label": dict(enumerate(labels)),
        "num_labels": len(labels),
    }


@router.get("/server_info")
async def server_info(request: Request) -> dict[str, Any]:
    """How this replica runs: its version, its load, whether it is ready and its resident memory,
    in all and per model (what loading each model added)."""
    models = _models(request)
    default = models.default.model.model_name
    return {
        "version": f"rewardserve {__version__}",
        "model_path": default,
        "served_model_name": default,
        "ready": models.ready,
        "load": models.in_flight_sequences,
        "max_queued_sequences": models.max_in_flight,
        "resident_mib": resident_mib(),
        "models": {
            pipeline.model.model_name: {
                "ready": pipeline.admission.ready,
                "load": pipeline.admission.in_flight_sequences,
                "max_queued_sequences": pipeline.admission.max_in_flight,
                "resident_mib": pipeline.model.resident_mib,
                # what an evaluator's report names: the engine's precision, and a judge's rule
                "precision": pipeline.model.precision,
                "judge": verdict.rule if (verdict := pipeline.model.outputs.verdict) is not None else None,
            }
            for pipeline in models
        },
    }
