"""The baseline users run today: FastAPI around a transformers model, one forward pass per request.

As OpenRLHF's `serve_rm` does it: the handler tokenizes the request's items padded to the
longest, runs the model and answers, blocking the event loop while it does, so requests are
served one at a time and a batch is whatever one client sent. Same /score body as rewardserve.

    python -m rewardserve.bench.naive_server --checkpoint DIR --port 8001 --max-length 256
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from transformers import AutoTokenizer

from rewardserve.bundle.cpus import available_cpus
from rewardserve.service.endpoints.score import ScoreRequest, ScoreResponse
from rewardserve.training.reward_model import load_reward_model


def create_naive_app(checkpoint: str, max_length: int) -> FastAPI:
    torch.set_num_threads(available_cpus())
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = load_reward_model(checkpoint).eval()
    app = FastAPI()

    @app.post("/score")
    async def score(body: ScoreRequest) -> ScoreResponse:
        prompts = [i.prompt for i in body.items]
        responses = [i.response for i in body.items]
        inputs = tokenizer(
            prompts, responses, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            rewards = model(**inputs).logits[:, 0]
        return ScoreResponse(rewards=rewards.tolist(), model="naive")

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-length", type=int, required=True)
    args = parser.parse_args()
    app = create_naive_app(args.checkpoint, args.max_length)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
