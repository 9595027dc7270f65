"""The model bundle: the one contract between training/export and the server.

A bundle is a directory with the ONNX graph, `tokenizer.json` and `manifest.json`. This package
imports neither torch nor the service; training, export and service all import it.
"""

from rewardserve.bundle.formatting import EncodedBatch, EncodedSequence, InputFormat, SequenceEncoder
from rewardserve.bundle.manifest import BundleError, Manifest, bundle_digest, load_bundle, save_bundle
from rewardserve.bundle.runtime import BundleRuntime, GraphRunner

__all__ = [
    "BundleError",
    "BundleRuntime",
    "EncodedBatch",
    "EncodedSequence",
    "GraphRunner",
    "InputFormat",
    "Manifest",
    "SequenceEncoder",
    "bundle_digest",
    "load_bundle",
    "save_bundle",
]
