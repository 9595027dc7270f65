"""The HTTP server: FastAPI routes -> each endpoint's body read into Inputs -> the scoring core
(`rewardserve.scoring`: validate, admit, render, tokenize, batch, engine) -> the endpoint's
answer. Never imports torch or training."""

from rewardserve.scoring.build import bundle_pipeline
from rewardserve.service.app import create_app
from rewardserve.service.settings import Settings

__all__ = ["Settings", "bundle_pipeline", "create_app"]
