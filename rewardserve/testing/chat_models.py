"""Chat reward models and policy chat formats for the fidelity tests.

Three tiny decoder RMs built from configs, each with a byte-level BPE tokenizer trained on HH
text and the special tokens and chat template of the family it imitates:

- `qwen3`: ChatML with Qwen3's empty thinking block before the final answer, `<|im_end|>` EOS,
  pad `<|endoftext|>`, no BOS (Skywork-Reward-V2-Qwen3);
- `llama3`: Llama 3.1's headers, its knowledge-date system preamble, `bos_token` written by the
  template and also added by the tokenizer's post-processor, so a careless second BOS shows
  (Skywork-Reward-V2-Llama-3.1);
- `gemma2`: Gemma's turns (`model` for the assistant, content trimmed), `<bos>` written by the
  template and added by the post-processor, sliding-window layers shorter than the conversations
  (Skywork-Reward-Gemma-2-27B).

And the chat formats a policy may write in, as Jinja templates like those the families ship,
with the end-of-turn token generation stops at: what a trainer decodes and sends.
"""

from __future__ import annotations

from pathlib import Path

QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_query_index = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0].role == 'system' %}{%- set system_message = messages[0].content | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

GEMMA_TEMPLATE = (
    "{{- bos_token }}{%- for m in messages %}{%- set role = 'model' if m.role == 'assistant' else m.role %}"
    "{{- '<start_of_turn>' + role + '\\n' + m.content | trim + '<end_of_turn>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

CHAT_RMS = {
    # kind: (special tokens, bos, eos, pad, template)
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", QWEN3_TEMPLATE),
    "llama3": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        + ["<|finetune_right_pad_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|finetune_right_pad_id|>",
        LLAMA31_TEMPLATE,
    ),
    "gemma2": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<eos>",
        "<pad>",
        GEMMA_TEMPLATE,
    ),
}
CHAT_RMS["gemma3"] = CHAT_RMS["gemma2"]  # the same turns and special tokens


def build_chat_rm(
    kind: str, out: Path, texts: list[str], hidden_size: int = 32, labels: list[str] | None = None
) -> Path:
    """A 2-layer chat RM of `kind` with random weights, two query heads sharing one key-value head;
    with `labels`, a head of one output per label (a multi-objective RM, labels in its id2label)."""
    config = family_config(kind, chat_tokenizer(kind, out, texts), hidden_size)
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    return save_random_reward_model(config, out)


def chat_tokenizer(kind: str, out: Path, texts: list[str], extra_specials: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer trained on `texts`, with the family's special tokens and chat
    template (and `extra_specials`), saved in `out`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials, bos, eos, pad, template = CHAT_RMS[kind]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=[*specials, *extra_specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    if kind == "qwen3":  # Qwen3's thinking tags are added tokens, not special ones
        tokenizer.add_tokens([AddedToken("<think>", special=False), AddedToken("</think>", special=False)])
    if bos:
        single = f"{bos} $A"
        tokenizer.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=list(extra_specials) or None,
    )
    fast.chat_template = template
    fast.save_pretrained(out)
    return fast


def family_config(kind: str, fast, hidden_size: int):
    from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, Qwen3Config

    family = {"qwen3": Qwen3Config, "llama3": LlamaConfig, "gemma2": Gemma2Config, "gemma3": Gemma3TextConfig}[kind]
    config = family(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,  # grouped-query attention, as the families ship
        max_position_embeddings=1024,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
        num_labels=1,
    )
    if kind in ("qwen3", "gemma2", "gemma3"):
        config.head_dim = hidden_size // 2
    if kind in ("gemma2", "gemma3"):  # attention scaled by its own scalar; sliding layers shorter than conversations
        config.query_pre_attn_scalar, config.sliding_window = hidden_size // 2, 64
    if kind == "gemma3":  # one sliding layer beside one global one
        config.layer_types = ["sliding_attention", "full_attention"]
    return config


def save_random_reward_model(config, out: Path) -> Path:
    """A sequence-classification model of `config`, the same random weights every run."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # a head whose rewards differ visibly between sequences and tokens
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    return out


def build_judge_lm(kind: str, out: Path, texts: list[str], hidden_size: int = 32) -> Path:
    """A 2-layer causal LM of `kind` with random weights, to be exported as a judge: its LM head
    (tied to the embeddings where the family ties them) drawn so that verdict probabilities
    spread over (0, 1), neither all near uniform nor all saturated."""
    import torch
    from transformers import AutoModelForCausalLM

    config = family_config(kind, chat_tokenizer(kind, out, texts), hidden_size)
    config.architectures = None
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


LABELS = ["helpfulness", "harmlessness", "verbosity"]  # the multi-objective RM's head
LABEL_WEIGHTS = [1.0, 0.5, -0.25]  # its reward


def export_chat_rm(checkpoint: Path, out: Path, heldout_pairs, options) -> Path:
    """`checkpoint` exported to the bundle `out` (named so), parity on 128 held-out responses."""
    from rewardserve.export.onnx_export import export_bundle

    parity = [(e.prompt, r) for e in heldout_pairs[:64] for r in e.responses]
    export_bundle(checkpoint, out, parity, name=out.name, max_length=1024, output_options=options)
    return out


STEP_SEPARATOR = "<extra_0>"  # Qwen2.5-Math-PRM's


def build_prm(out: Path, texts: list[str], hidden_size: int = 32) -> Path:
    """A Qwen3-style process reward model: a 2-label token classifier, `<extra_0>` a special token."""
    import torch
    from transformers import AutoModelForTokenClassification

    config = family_config("qwen3", chat_tokenizer("qwen3", out, texts, (STEP_SEPARATOR,)), hidden_size)
    config.num_labels = 2
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config)
    with torch.no_grad():  # step probabilities spread over (0, 1), not all near one half
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(out)
    return out


OBJECTIVES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
GATED_MODELING = Path(__file__).with_name("gated_reward_model.py")
ASSISTANT_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def build_gated_rm(out: Path, texts: list[str], hidden_size: int = 32) -> Path:
    """A Llama-3.1-style RM with a gated multi-objective head shaped like ArmoRM's: its own modeling
    code in the checkpoint (config auto_map, loaded with trust_remote_code), the gating network
    read at the last assistant header, whose token ids the code defines as `token_pattern`."""
    import importlib.util

    import torch

    fast = chat_tokenizer("llama3", out, texts)
    pattern = fast(ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]
    code = GATED_MODELING.read_text().replace("token_pattern = []", f"token_pattern = {pattern}")
    (out / "modeling_gated.py").write_text(code)
    spec = importlib.util.spec_from_file_location("modeling_gated", out / "modeling_gated.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = family_config("llama3", fast, hidden_size)
    config.num_objectives = len(OBJECTIVES)
    config.id2label = dict(enumerate(OBJECTIVES))
    config.label2id = {name: i for i, name in enumerate(OBJECTIVES)}
    config.gating_hidden_dim, config.gating_n_hidden, config.gating_temperature = 16, 2, 1.0
    config.auto_map = {"AutoModelForSequenceClassification": "modeling_gated.LlamaForRewardModelWithGating"}
    torch.manual_seed(0)
    model = module.LlamaForRewardModelWithGating(config)
    with torch.no_grad():  # objectives that differ visibly; a transform that is not the identity
        model.regression_layer.weight.normal_(0, 1.0)
        model.reward_transform_matrix.add_(torch.randn_like(model.reward_transform_matrix) * 0.1)
    model.save_pretrained(out)
    return out


# Policy formats: (template, its special-token variables, the token generation stops at)
POLICY_FORMATS = {
    "chatml": (
        "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
        {},
        "<|im_end|>",
    ),
    "qwen3-no-thinking": (QWEN3_TEMPLATE, {}, "<|im_end|>"),
    "llama3": (LLAMA31_TEMPLATE, {"bos_token": "<|begin_of_text|>"}, "<|eot_id|>"),
    "llama2": (
        "{%- if messages[0].role == 'system' %}"
        "{%- set system = '<<SYS>>\\n' + messages[0].content + '\\n<</SYS>>\\n\\n' %}{%- set messages = messages[1:] %}"
        "{%- else %}{%- set system = '' %}{%- endif %}"
        "{%- for m in messages %}{%- if m.role == 'user' %}"
        "{{- bos_token + '[INST] ' + (system if loop.first else '') + m.content | trim + ' [/INST]' }}"
        "{%- else %}{{- ' ' + m.content | trim + ' ' + eos_token }}{%- endif %}{%- endfor %}",
        {"bos_token": "<s>", "eos_token": "</s>"},
        " </s>",
    ),
    "mistral": (
        "{{- bos_token }}{%- for m in messages %}{%- if m.role == 'user' %}{{- '[INST] ' + m.content + ' [/INST]' }}"
        "{%- else %}{{- m.content + eos_token }}{%- endif %}{%- endfor %}",
        {"bos_token": "<s>", "eos_token": "</s>"},
        "</s>",
    ),
    "gemma": (
        GEMMA_TEMPLATE,
        {"bos_token": "<bos>"},
        "<end_of_turn>",
    ),
    "phi3": (
        "{%- for m in messages %}{{- '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}",
        {},
        "<|end|>",
    ),
    "phi4": (
        "{%- for m in messages %}{{- '<|im_start|>' + m.role + '<|im_sep|>' + m.content + '<|im_end|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant<|im_sep|>' }}{%- endif %}",
        {},
        "<|im_end|>",
    ),
    "deepseek": (
        "{{- bos_token }}{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- endif %}"
        "{%- for m in messages %}{%- if m.role == 'user' %}{{- '<｜User｜>' + m.content }}"
        "{%- elif m.role == 'assistant' %}{{- '<｜Assistant｜>' + m.content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<｜Assistant｜>' }}{%- endif %}",
        {"bos_token": "<｜begin▁of▁sentence｜>"},
        "<｜end▁of▁sentence｜>",
    ),
    "hh": (
        "{%- for m in messages %}{{- '\\n\\nHuman: ' if m.role == 'user' else '\\n\\nAssistant: ' }}{{- m.content }}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '\\n\\nAssistant:' }}{%- endif %}",
        {},
        "",
    ),
}


def policy_text(policy: str, prompt: list[dict], response: str) -> tuple[str, str]:
    """(prompt text, query text) as a trainer sends them for a policy writing in `policy`: the
    prompt rendered for generation, then the response and the token generation stopped at."""
    from rewardserve.bundle.chat import render

    template, variables, stop = POLICY_FORMATS[policy]
    variables = {**variables, "enable_thinking": False}
    prompt_text = render(template, prompt, True, variables)
    separator = " " if policy == "hh" else ""
    return prompt_text, prompt_text + separator + response + stop
