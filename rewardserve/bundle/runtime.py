"""Run a reward graph, with ONNX Runtime or (bf16 on CPU) OpenVINO (openvino_session.py): the
scoring code shared by the server, export and eval."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from rewardserve.bundle.cpus import available_cpus
from rewardserve.bundle.engine_choice import EngineChoice, Machine, RequestedPrecision, choose
from rewardserve.bundle.formatting import EncodedBatch, EncodedSequence, SequenceEncoder, Text
from rewardserve.bundle.manifest import Manifest, Precision, load_bundle
from rewardserve.bundle.openvino_session import OpenVinoSession
from rewardserve.bundle.outputs import REWARD, ModelOutputs, Scores, read_outputs
from rewardserve.bundle.past import PAST, PREFIX_LENGTHS
from rewardserve.bundle.prefix import PrefixRunner, shared_prompts

CUDA = "CUDAExecutionProvider"


def providers_for(precision: Precision) -> list[str]:
    """fp32 and fp16 graphs run on CUDA when this onnxruntime has it. int8 and int4 graphs stay on
    the CPU: dynamic int8 has no CUDA kernels, and int4 with fp32 activations is a CPU memory option."""
    cuda = CUDA in ort.get_available_providers() and precision not in ("int8", "int4")
    return [CUDA, "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def session_options(threads: int | None = None, arena: bool = True) -> ort.SessionOptions:
    """One call uses every CPU the process may use (quota-aware), and nothing more: the server
    runs one engine call at a time, so inter-op parallelism would only oversubscribe.

    `arena`: onnxruntime keeps the memory of its largest batch for the next. The server's batches
    are bounded by MAX_BATCH_TOKENS; export's offline passes run a large model's longest batches
    once each, and without the arena give that memory back (a 0.6B decoder at 8 x 1024 tokens:
    7.4 GB kept with it, 2.0 GB after the batch without it, 12% slower)."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


class GraphRunner:
    """A session on a reward graph (ONNX Runtime; OpenVINO for bf16), with the encoder that
    builds its inputs and the declaration of what its outputs are (`outputs`: one scalar by
    default; objectives or step rewards, bundle/outputs.py).

    On CUDA, batches go through IO binding: inputs are copied to the GPU once, and the rewards
    stay there until one copy back, instead of onnxruntime staging every tensor per call.
    Not thread-safe for concurrent `run` calls by design: the server's batcher owns one.
    """

    prefix: PrefixRunner | None = None  # responses after a prompt's keys and values (BundleRuntime)

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
        self.output_names = [output_name] if names == [REWARD] else names
        self.graph = graph
        self.precision = precision
        self.threads = threads
        self.session = self._open()
        self.device = "cuda" if CUDA in self.session.get_providers() else "cpu"
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        # A prefix graph (bundle/prefix.py) scores whole sequences after an empty past.
        self.past_shapes = {
            i.name: i.shape for i in getattr(self.session, "get_inputs", list)() if i.name.startswith(PAST)
        }

    def _open(self) -> ort.InferenceSession | OpenVinoSession:
        """The session for this graph's precision: bf16 in OpenVINO (the graph itself is fp32),
        the others in ONNX Runtime on the providers that have kernels for them."""
        if self.precision == "bf16":
            return OpenVinoSession(self.graph, self.threads or available_cpus())
        options = session_options(self.threads, self.arena)
        return ort.InferenceSession(str(self.graph), options, providers=providers_for(self.precision))

    @property
    def past_dtype(self) -> np.dtype:
        """How its keys and values are held: fp32, or bf16 bits under OpenVINO at bf16 (openvino_session.py)."""
        return getattr(self.session, "past_dtype", np.dtype(np.float32))

    def reopen(self) -> None:
        """Replace the session with a fresh one on the same graph (after a fault left it broken)."""
        self.session = self._open()

    def run(self, batch: EncodedBatch) -> np.ndarray:
        """Rewards (float32, one per row) of a padded batch."""
        return self.score(batch).rewards

    def score(self, batch: EncodedBatch) -> Scores:
        """Rewards of a padded batch, and every other output the model declares."""
        feeds = self.after_empty_past(batch.arrays) if self.past_shapes else batch.arrays
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
        if len(self.output_names) == 1 and self.outputs.steps is None:  # one scalar: the common case
            return Scores(values[0].reshape(-1).astype(np.float32, copy=False))
        named = dict(zip(self.outputs.graph_outputs(), values, strict=True))
        return read_outputs(self.outputs, named, batch.arrays["input_ids"], batch.response_starts)

    def after_empty_past(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A prefix graph's inputs for whole sequences: no tokens before them (it reads no position ids)."""
        rows = len(arrays["input_ids"])
        empty = {
            name: np.zeros((rows, shape[1], 0, shape[3]), self.past_dtype) for name, shape in self.past_shapes.items()
        }
        whole = {"input_ids": arrays["input_ids"], "attention_mask": arrays["attention_mask"]}
        return whole | empty | {PREFIX_LENGTHS: np.zeros(rows, np.int64)}


# Padded tokens per offline batch. A 0.6B decoder's fused graph holds about 0.55 MB a token while
# it runs (1.2 GB at 2048 tokens, beside 1.9 GB of weights; 32 x 1024 tokens grew it by 8 GB), and
# runs no faster in larger batches: 278 tokens/s at 1024 tokens, 251 at 4096.
OFFLINE_BATCH_TOKENS = 2048


def score_offline(
    runner: GraphRunner,
    prompts: Sequence[Text],
    responses: Sequence[Text],
    batch_size: int = 32,
    progress: str | None = None,
) -> np.ndarray:
    """Rewards of many (prompt, response) texts or conversations known up front, in input order:
    offline jobs' batching (export's gates, `eval` and `score` in-process). With every sequence known, sorting
    by length and cutting batches of `batch_size` rows (and at most OFFLINE_BATCH_TOKENS) leaves
    almost no padding; the server's MicroBatcher solves the other problem, sequences arriving
    from many clients over time. `progress` labels a progress bar (rate and ETA) on stderr."""
    return score_sequences(runner, runner.encoder.encode(prompts, responses), batch_size, progress)


def score_sequences(
    runner: GraphRunner, sequences: Sequence[EncodedSequence], batch_size: int = 32, progress: str | None = None
) -> np.ndarray:
    """score_offline's rewards for sequences already encoded."""
    return scores_of_sequences(runner, sequences, batch_size, progress).rewards


def scores_of_sequences(
    runner: GraphRunner, sequences: Sequence[EncodedSequence], batch_size: int = 32, progress: str | None = None
) -> Scores:
    """Every output of sequences already encoded, in their order, batched as score_offline does.
    A runner with prefix reuse (BundleRuntime's `prefix`) runs each prompt that several sequences
    share once, and their responses after it (bundle/prefix.py); the rest run whole."""
    split = np.array(shared_prompts(sequences) if runner.prefix is not None else [], dtype=np.int64)
    whole = np.setdiff1d(np.arange(len(sequences)), split)
    order = whole[np.argsort([len(sequences[i]) for i in whole], kind="stable")]
    parts = []
    with tqdm(total=len(sequences), desc=progress, unit="seq", disable=progress is None, leave=False) as bar:
        if len(split):
            parts.append(runner.prefix.score_sequences([sequences[i] for i in split], batch_size, bar))
        for rows in token_batches([len(sequences[i]) for i in order], batch_size):
            chunk = order[rows]
            parts.append(runner.score(runner.encoder.pad([sequences[i] for i in chunk])))
            bar.update(len(chunk))
    return Scores.concatenate(parts).take(np.argsort(np.concatenate([split, order]), kind="stable"))


def token_batches(lengths: Sequence[int], max_rows: int, max_tokens: int = OFFLINE_BATCH_TOKENS) -> Iterator[slice]:
    """Consecutive runs of `lengths`, each at most `max_rows` rows and `max_tokens` once padded to
    its longest (a sequence longer than that goes alone)."""
    start = 0
    while start < len(lengths):
        end, width = start + 1, lengths[start]
        while end < len(lengths) and end - start < max_rows:
            width = max(width, lengths[end])
            if width * (end - start + 1) > max_tokens:
                break
            end += 1
        yield slice(start, end)
        start = end


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
        self.choice: EngineChoice = choose(precision, self.manifest.offered(), self.machine)
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
        self.prefix = PrefixRunner(self) if self.prefix_refused is None else None

    def _prefix_file(self) -> str:
        """The prefix graph at the chosen precision: onnxruntime's fused one at fp32; at bf16 the
        bf16 variant's own graph, a prefix graph in OpenVINO's format."""
        prefix = self.manifest.prefix
        return self.manifest.graph_file("bf16") if self.choice.precision == "bf16" else prefix.file

    def _why_no_prefix(self) -> str | None:
        prefix = self.manifest.prefix
        if prefix is None:
            return "the bundle has no prefix graph (written for decoders built from their weights, at export)"
        if self.choice.precision == "bf16":
            if prefix.bf16 is None:
                return "the bundle has no prefix graph gated at bf16 (export it again on a CPU with bf16)"
            if not prefix.bf16.passed:
                return f"its bf16 prefix path was refused at export: {prefix.bf16.refused}"
            return None
        if self.choice.precision != "fp32":
            return f"the engine runs at {self.choice.precision}; the prefix graph is the fp32 model's or bf16's"
        if providers_for("fp32")[0] == CUDA:
            return "the prefix graph runs on the CPU (fp32 GroupQueryAttention with a past)"
        return None
