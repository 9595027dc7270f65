"""The scoring server: FastAPI routes -> MicroBatcher -> ONNX Runtime. Never imports torch."""

from rewardserve.service.app import create_app
from rewardserve.service.settings import Settings

__all__ = ["Settings", "create_app"]
