"""The scoring core built from a bundle: every stage, sized by the settings, for a transport to
call (`service/app.py` for HTTP). The settings are whatever carries the fields of
`PipelineSettings`: the server's Settings, or a test's.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Protocol

from rewardserve.bundle import BundleRuntime, Manifest, bundle_digest
from rewardserve.bundle.engine_choice import RequestedPrecision
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS
from rewardserve.bundle.memory import available_memory
from rewardserve.scoring.admit import Admission
from rewardserve.scoring.batcher import MicroBatcher
from rewardserve.scoring.cache import RewardCache
from rewardserve.scoring.engine import BundleEngine
from rewardserve.scoring.metrics import Metrics
from rewardserve.scoring.model import ServedModel
from rewardserve.scoring.models import ServedModels
from rewardserve.scoring.monitoring import RewardMonitor
from rewardserve.scoring.pipeline import ScoringPipeline, warm_up_inputs
from rewardserve.scoring.retemplate import Retemplate, Unparsed
from rewardserve.scoring.shared_prompts import KEPT_SEQUENCES, SharedPrompts, kept_prompts_budget
from rewardserve.scoring.threads import in_lower_priority_thread, lower_this_thread
from rewardserve.scoring.tokenize import Tokenize
from rewardserve.scoring.validate import Validate

logger = logging.getLogger("rewardserve")


class PipelineSettings(Protocol):
    """What sizes the core (the server's Settings documents each field)."""

    bundle: Path
    models: dict[str, Path]
    served_model_name: str | None
    precision: RequestedPrecision
    threads: int | None
    prefix_reuse: bool
    worker_nice: int
    length_bucket: int | None
    cache_size: int
    max_batch_size: int
    max_batch_tokens: int | None
    prefix_min_tokens: int
    prefix_cache_mb: int | None  # None: kept_prompts_budget
    prefix_cache_seconds: float
    max_items_per_request: int
    max_text_chars: int
    policy_format: str
    max_steps_per_item: int
    max_objectives_per_request: int
    max_queued_sequences: int
    unparsed_policy_text: Unparsed


# fp32 (and int8) on a CPU gains nothing from large batches: on an AMX Xeon, length-sorted HH
# sequences ran at 77 seq/s in batches of 4 (~600 tokens) and 61 in batches of 32; on an EPYC at
# the same speed from 256 to 8192 tokens. Small batches also group closer lengths when few
# sequences are queued, as with one sample per request: 512 tokens against 2048 cut padding at
# 128 clients x 1 item from 8.6% to 1.9% and served 14% more (`rewardserve bench`, docs/operate.md).
# bf16 on AMX wants more rows per matrix tile: the default bundle served 307 seq/s at 64 clients
# x 8 items with 4096 tokens against 226 with 512 (2048: 278, 8192: 280). A GPU needs large batches.
DEFAULT_BATCH_TOKENS = {"cpu": 512, "cpu bf16": 4096, "cuda": 32768}


def default_batch_tokens(runtime: BundleRuntime) -> int:
    if runtime.device == "cuda":
        return DEFAULT_BATCH_TOKENS["cuda"]
    return DEFAULT_BATCH_TOKENS["cpu bf16" if runtime.precision in OPENVINO_PRECISIONS else "cpu"]


def bundle_runtime(settings: PipelineSettings, bundle: Path | None = None) -> BundleRuntime:
    """The runtime of `bundle` (default: `settings.bundle`) as `settings` ask for it: verified,
    its session open."""
    return BundleRuntime(
        bundle or settings.bundle,
        precision=settings.precision,
        threads=settings.threads,
        prefix_reuse=settings.prefix_reuse,
    )


def bundle_models(settings: PipelineSettings) -> ServedModels:
    """A pipeline for `settings.bundle` (the default model) and one for each of `settings.models`,
    each model's `resident_mib` what loading it added to the process's resident memory."""
    bundles = {None: settings.bundle, **settings.models}
    pipelines = []
    for name, bundle in bundles.items():
        before = resident_mib()
        runtime = in_lower_priority_thread(settings.worker_nice, lambda bundle=bundle: bundle_runtime(settings, bundle))
        pipelines.append(bundle_pipeline(settings, runtime, name))
        pipelines[-1].model.resident_mib = max(resident_mib() - before, 0)  # freed pages can be reused
    return ServedModels(pipelines)


def bundle_pipeline(
    settings: PipelineSettings, runtime: BundleRuntime | None = None, name: str | None = None
) -> ScoringPipeline:
    """Every stage for `settings.bundle` (or `runtime`, when it was opened and checked already),
    serving as `name` (default: `settings.served_model_name`, else the bundle's own name)."""
    nice = settings.worker_nice
    # Loading verifies every checksum in the bundle before the server accepts anything. On a
    # low-priority thread, so the thread pools it starts are low-priority (threads.py).
    runtime = runtime or in_lower_priority_thread(nice, lambda: bundle_runtime(settings))
    manifest = runtime.manifest
    metrics = Metrics()
    metrics.engine_precision.labels(runtime.choice.precision, runtime.device).set(1)
    length_bucket = settings.length_bucket or runtime.length_bucket
    if length_bucket > 1:
        logger.info("length buckets of %d tokens: a reward does not depend on its batch-mates", length_bucket)
    engine = BundleEngine(runtime, metrics, length_bucket)
    cache = RewardCache(bundle_digest(manifest), settings.cache_size) if settings.cache_size else None
    batch_tokens = settings.max_batch_tokens or default_batch_tokens(runtime)
    # Workers run below the event loop's priority, so that the loop answers 429s at once.
    lower = functools.partial(lower_this_thread, nice)
    prompts = shared_prompts(settings, runtime, metrics)
    batcher = MicroBatcher(engine, settings.max_batch_size, batch_tokens, metrics, cache, lower, prompts, length_bucket)
    # What the model can say of its scores, decided here once; every stage reads its outputs.
    model = ServedModel(
        name or settings.served_model_name or manifest.name,
        manifest.calibration_temperature,
        manifest.outputs,
        reward_stats(manifest),
        runtime.choice.precision,
    )
    outputs = model.outputs
    return ScoringPipeline(
        validate=Validate(
            settings.max_items_per_request,
            settings.max_text_chars,
            settings.policy_format,
            outputs=outputs,
            max_steps=settings.max_steps_per_item,
            max_objectives=settings.max_objectives_per_request,
        ),
        admission=Admission(
            settings.max_queued_sequences, metrics, lambda: batcher.throughput, lambda: not engine.broken
        ),
        retemplate=Retemplate(settings.unparsed_policy_text),
        tokenize=Tokenize(runtime.encoder, outputs.steps),
        batcher=batcher,
        model=model,
        metrics=metrics,
        monitor=RewardMonitor(metrics.registry, manifest.reward_mean, manifest.reward_std, outputs=outputs),
        thread_initializer=lower,
        warm_up=warm_up_inputs(outputs),
    )


def reward_stats(manifest: Manifest) -> tuple[float, float] | None:
    """(mean, std) of the bundle's rewards on its reference set, where export measured them."""
    if manifest.reward_mean is None or not manifest.reward_std:
        return None
    return manifest.reward_mean, manifest.reward_std


def shared_prompts(settings: PipelineSettings, runtime: BundleRuntime, metrics: Metrics) -> SharedPrompts | None:
    """Prompt sharing where the runtime has a prefix graph; the start log says which, and why not."""
    metrics.prefix_reuse.set(runtime.prefix is not None)
    if runtime.prefix is None:
        logger.info("prefix reuse: off: %s", runtime.prefix_refused)
        return None
    per_token, max_length = runtime.prefix.bytes_per_token, runtime.manifest.input_format.max_length
    if settings.prefix_cache_mb is None:
        budget = kept_prompts_budget(per_token, max_length, available_memory())
        sized = f"sized for {KEPT_SEQUENCES} sequences of {max_length} tokens at {per_token // 1024} KiB a token"
    else:
        budget, sized = settings.prefix_cache_mb * 2**20, "PREFIX_CACHE_MB"
    logger.info(
        "prefix reuse: on, at %s with %s (prompts of %d tokens or more; up to %d MiB kept, %s)",
        runtime.choice.precision,
        runtime.graph.name,
        settings.prefix_min_tokens,
        budget // 2**20,
        sized,
    )
    if runtime.lone_prompts_split is None:
        logger.info("lone prompts: run whole, batched (their prompts kept from the same call)")
    else:
        logger.info("lone prompts: each run as its prompt, then its response: %s", runtime.lone_prompts_split)
    row_bytes, bucket = runtime.prefix.row_bytes_per_token, runtime.response_bucket
    return SharedPrompts(
        settings.prefix_min_tokens, budget, settings.prefix_cache_seconds, row_bytes, metrics, response_bucket=bucket
    )


def resident_mib() -> int:
    """This process's resident memory, in MiB (Linux; 0 elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), "VmRSS: 0 kB")
    return int(line.split()[1]) // 1024
