"""`rewardserve serve`: check the bundle, then run uvicorn."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from rewardserve.bundle import BundleError, load_bundle
from rewardserve.service.app import create_app
from rewardserve.service.settings import Settings


def serve(bundle: Path, host: str, port: int) -> int:
    try:
        manifest = load_bundle(bundle)
    except BundleError as exc:
        print(f"rewardserve: cannot serve: {exc}", file=sys.stderr)
        return 2
    print(f"rewardserve: serving {manifest.name!r} from {bundle} on http://{host}:{port}", file=sys.stderr)
    # The bundle was verified above; the app reuses that manifest instead of hashing it again.
    uvicorn.run(create_app(Settings(bundle=bundle, host=host, port=port), manifest), host=host, port=port)
    return 0
