"""`rewardserve bench`: the server under real HH load, against the raw engine and a naive server.

workload (real texts) -> load (HTTP clients, metrics scrapes) -> engine (ONNX Runtime alone)
-> naive_server (FastAPI + transformers, the baseline) -> run (orchestration and the report).
"""
