"""The scoring server: FastAPI routes -> the request pipeline (validate, admit, render, tokenize,
batch, engine, respond) -> ONNX Runtime. Never imports torch or training."""

from rewardserve.service.app import bundle_pipeline, create_app
from rewardserve.service.settings import Settings

__all__ = ["Settings", "bundle_pipeline", "create_app"]
