"""Export a trained reward checkpoint to a verified ONNX bundle (needs the `train` extra)."""
