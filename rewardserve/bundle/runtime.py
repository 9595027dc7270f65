"""Run a reward graph, with ONNX Runtime or (bf16 and w8a8 on CPU) OpenVINO (openvino_session.py): the
scoring code shared by the server, export and eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from rewardserve.bundle.engine_choice import EngineChoice, Machine, RequestedPrecision, choose
from rewardserve.bundle.formatting import EncodedBatch, SequenceEncoder
from rewardserve.bundle.manifest import OPENVINO_PRECISIONS, Manifest, Precision, load_bundle
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.outputs import REWARD, ModelOutputs, Scores, read_outputs
from rewardserve.bundle.past import empty_past
from rewardserve.bundle.prefix import PrefixRunner
from rewardserve.bundle.sessions import CUDA, open_session, providers_for

# bf16 kernels round differently at different padded lengths (a reward of the default bundle
# moved by up to 1.6e-3 between alone and in a batch of 40); padded to a multiple of 16 within its
# own bucket, it moves by 0 (benchmarks/batch_invariance.py). fp32 moves by ~1e-7 without it.
OPENVINO_LENGTH_BUCKET = 16
# A response read after its prompt's keys and values is padded to a multiple of this under
# OpenVINO. Padding it further does not make its reward its whole sequence's everywhere: on the
# 0.6B Qwen3 shape at w8a8, of export's 512 held-out sequences 27 differed padded to 16, 5 padded
# to 32 and 3 to 64, by up to 0.011 each time (benchmarks/response_padding.py). Export measures
# the gap at this padding on each bundle (PrefixVariant.max_abs_diff_whole, response_bucket).
OPENVINO_RESPONSE_BUCKET = 16
# How far a reward may move between its sequence run whole and run after its prompt for a lone
# prompt to run whole: the bar a reward's batch-mates may move it by (tests/test_openvino_rewards.py).
MAX_WHOLE_VS_SPLIT = 1e-3


class GraphRunner:
    """A session on a reward graph (ONNX Runtime; OpenVINO for bf16), with the encoder that
    builds its inputs and the declaration of what its outputs are (`outputs`: one scalar by
    default; objectives or step rewards, bundle/outputs.py).

    On CUDA, batches go through IO binding: inputs are copied to the GPU once, and the rewards
    stay there until one copy back, instead of onnxruntime staging every tensor per call.
    Not thread-safe for concurrent `score` calls by design: the server's batcher owns one.
    """

    def __init__(
        self,
        graph: Path,
        encoder: SequenceEncoder,
        output_name: str = "reward",
        *,
        outputs: ModelOutputs | None = None,
        precision: Precision = "fp32",
        threads: int | None = None,
        io_binding: bool | None = None,
        arena: bool = True,
    ) -> None:
        self.encoder = encoder
        self.arena = arena
        self.outputs = outputs or ModelOutputs()
        # A scalar bundle's reward output keeps its manifest name; the others' names are fixed.
        names = self.outputs.graph_outputs()
        self.scalar = names == [REWARD]  # one reward per sequence, the common case: read without read_outputs
        self.output_names = [output_name] if self.scalar else names
        self.graph = graph
        self.precision = precision
        self.threads = threads
        self.session = self._open()
        self.device = "cuda" if CUDA in self.session.get_providers() else "cpu"
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        # What the graph reads beside a batch: a prefix graph scores whole sequences after an empty past.
        self.empty_past = empty_past(self.session)

    @property
    def length_bucket(self) -> int:
        """Pad each sequence to a multiple of this, batched only with sequences of the same
        multiple (the server's batcher and offline jobs alike): OpenVINO's bf16 kernels, which
        also run w8a8 graphs' other nodes, round differently at different padded lengths."""
        return OPENVINO_LENGTH_BUCKET if self.precision in OPENVINO_PRECISIONS else 1

    @property
    def response_bucket(self) -> int:
        """Pad responses read after a prompt's keys and values to a multiple of this, and batch
        them only with responses of the same multiple (OPENVINO_RESPONSE_BUCKET: what export's
        gap between a reward after its prompt and whole is measured at)."""
        return OPENVINO_RESPONSE_BUCKET if self.precision in OPENVINO_PRECISIONS else 1

    @property
    def splits_every_prompt(self) -> bool:
        """Whether a decoder's sequence is always scored after its prompt's keys and values, even
        where no other sequence shares the prompt. OpenVINO's kernels may round a sequence run
        whole differently from the same sequence run after its prompt (on the Qwen3-0.6B shape
        with responses padded to 16 tokens, the first sample of a GRPO group sent one a request
        moved by up to 6.0e-3 at w8a8 with attention in int8, 2.0e-3 at bf16), so there one
        path serves every sequence unless export measured the two alike (BundleRuntime); at fp32
        they agree to ~1e-7 and a lone prompt runs whole, in one batched call."""
        return self.precision in OPENVINO_PRECISIONS

    def _open(self) -> ort.InferenceSession | OpenVinoSession:
        return open_session(self.graph, self.precision, self.threads, self.arena)

    def reopen(self) -> None:
        """Replace the session with a fresh one on the same graph (after a fault left it broken)."""
        self.session = self._open()

    def score(self, batch: EncodedBatch) -> Scores:
        """Rewards of a padded batch, and every other output the model declares."""
        feeds = self.empty_past(batch.arrays) if self.empty_past else batch.arrays
        if self.io_binding:
            binding = self.session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, array)
            for name in self.output_names:
                binding.bind_output(name, self.device)
            self.session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = self.session.run(self.output_names, feeds)
        if self.scalar:
            return Scores(values[0].reshape(-1).astype(np.float32, copy=False))
        named = dict(zip(self.output_names, values, strict=True))
        return read_outputs(self.outputs, named, batch.arrays["input_ids"], batch.response_starts)


class BundleRuntime(GraphRunner):
    """A verified bundle: its tokenizer, its manifest, and its graph at the precision chosen for
    this machine (`choice`, with the reason: engine_choice.py decides).

    With `prefix_reuse`, the graph is the bundle's prefix graph where it can serve (`prefix`:
    whole sequences and responses after a prompt's keys and values, one session on the weights);
    else `prefix_refused` says why not."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest | None = None,
        *,
        precision: RequestedPrecision = "auto",
        threads: int | None = None,
        machine: Machine | None = None,
        prefix_reuse: bool = False,
    ) -> None:
        directory = Path(directory)
        self.directory = directory
        self.manifest = manifest or load_bundle(directory)
        self.machine = machine or Machine.this()
        self.choice: EngineChoice = choose(precision, self.manifest.offered(auto=precision == "auto"), self.machine)
        if precision == "auto" and (elsewhere := self._timed_elsewhere()):
            self.choice = EngineChoice(self.choice.precision, f"{self.choice.reason}; {elsewhere}")
        encoder = SequenceEncoder.from_file(directory / self.manifest.tokenizer_file, self.manifest.input_format)
        self.prefix_refused = self._why_no_prefix() if prefix_reuse else "switched off (PREFIX_REUSE=0)"
        if self.prefix_refused is None:
            graph = directory / self._prefix_file()
        else:
            graph = directory / self.manifest.graph_file(self.choice.precision)
        super().__init__(
            graph,
            encoder,
            self.manifest.output_name,
            outputs=self.manifest.outputs,
            precision=self.choice.precision,
            threads=threads,
        )
        # Responses after a prompt's keys and values, on the same session.
        self.prefix: PrefixRunner | None = PrefixRunner(self) if self.prefix_refused is None else None
        self.lone_prompts_split = self._why_lone_prompts_split() if self.prefix is not None else None

    def _timed_elsewhere(self) -> str | None:
        """Where `auto`'s choice rests on a speed check of another machine: export times w8a8
        against the variants before it, and `auto` serves it only where it ran faster there."""
        w8a8, here = self.manifest.variants.get("w8a8"), self.machine.describe()
        if w8a8 is None or not w8a8.passed or w8a8.measured_on == here:
            return None
        return f"export timed w8a8 against the others on {w8a8.measured_on}, not on this machine (PRECISION overrides)"

    @property
    def splits_every_prompt(self) -> bool:
        """GraphRunner's, where export did not measure a sequence's reward after its prompt to be
        its whole one within MAX_WHOLE_VS_SPLIT at this precision and response padding
        (`lone_prompts_split` says why); there a lone prompt runs whole, batched with others."""
        return self.lone_prompts_split is not None

    def _why_lone_prompts_split(self) -> str | None:
        precision = self.choice.precision
        if precision not in OPENVINO_PRECISIONS:
            return None
        judged = self.manifest.prefix.at(precision)
        measured_at = judged.response_bucket or OPENVINO_LENGTH_BUCKET  # bundles before it was recorded: 16
        if measured_at != self.response_bucket:
            return (
                f"export measured {precision} after a prompt with responses padded to {measured_at} tokens, "
                f"not {self.response_bucket} (export it again)"
            )
        if judged.max_abs_diff_whole > MAX_WHOLE_VS_SPLIT:
            return (
                f"at {precision} a reward after its prompt differed from its whole sequence's by "
                f"{judged.max_abs_diff_whole:.2g} at export, over {MAX_WHOLE_VS_SPLIT:g}"
            )
        return None

    def _prefix_file(self) -> str:
        """The prefix graph at the chosen precision: onnxruntime's fused one at fp32; at bf16 or
        w8a8 the variant's own graph, a prefix graph in OpenVINO's format."""
        precision = self.choice.precision
        return self.manifest.graph_file(precision) if precision in OPENVINO_PRECISIONS else self.manifest.prefix.file

    def _why_no_prefix(self) -> str | None:
        prefix, precision = self.manifest.prefix, self.choice.precision
        if prefix is None:
            return "the bundle has no prefix graph (written for decoders built from their weights, at export)"
        if precision in OPENVINO_PRECISIONS:
            if (judged := prefix.at(precision)) is None:
                return f"the bundle has no prefix graph gated at {precision} (export it again on a CPU that runs it)"
            if not judged.passed:
                return f"its {precision} prefix path was refused at export: {judged.refused}"
            return None
        if precision != "fp32":
            return f"the engine runs at {precision}; the prefix graph is the fp32 model's, bf16's or w8a8's"
        if providers_for("fp32")[0] == CUDA:
            return "the prefix graph runs on the CPU (fp32 GroupQueryAttention with a past)"
        return None
