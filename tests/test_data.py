"""Preference data: every file format and row shape becomes the same examples; nothing is lost silently."""

import csv
import gzip
import json

import pytest

from rewardserve.bundle.chat import PAIR_LAYOUT_TEMPLATE
from rewardserve.data.hh import default_data_files, split_of, split_transcript
from rewardserve.data.preferences import DataError, DataOptions, PreferenceExample, load_preferences
from rewardserve.training.checkpoint import TRANSCRIPT_TEMPLATE

HH_ROW = {"chosen": "\n\nHuman: Q\n\nAssistant: good", "rejected": "\n\nHuman: Q\n\nAssistant: bad"}
EXPLICIT_ROW = {"prompt": "\n\nHuman: Q", "chosen": "good", "rejected": "bad"}
EXPECTED = PreferenceExample.pair("\n\nHuman: Q", "good", "bad", source="prefs")


def write_jsonl(path, rows):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def load(path, **options):
    return load_preferences([path], options=DataOptions(**options))


def test_prompt_is_the_transcript_before_the_final_assistant_marker():
    transcript = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour\n\nAssistant:  Blue. "
    prompt, response = split_transcript(transcript)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour"
    assert response == "Blue."


@pytest.mark.parametrize("row", [HH_ROW, EXPLICIT_ROW], ids=["implicit-prompt", "explicit"])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet", "-dataset"])
def test_every_file_format_gives_the_same_example(tmp_path, row, suffix):
    path = tmp_path / f"prefs{suffix}"
    if suffix.startswith(".jsonl"):
        write_jsonl(path, [row])
    elif suffix == ".json":
        path.write_text(json.dumps([row]))
    elif suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
    else:
        import datasets

        table = datasets.Dataset.from_list([row])
        table.to_parquet(str(path)) if suffix == ".parquet" else table.save_to_disk(str(path))
    examples, report = load(path)
    assert examples == [PreferenceExample.pair("\n\nHuman: Q", "good", "bad", source=path.name.split(".")[0])]
    assert (report.rows, report.kept, report.bad) == (1, 1, [])


def test_conversational_rows_are_rendered_with_the_chat_template(tmp_path):
    prompt = [{"role": "user", "content": "Q"}]
    row = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    implicit = {"chosen": prompt + row["chosen"], "rejected": prompt + row["rejected"]}
    path = write_jsonl(tmp_path / "prefs.jsonl", [row, implicit])
    examples, _ = load(path, chat_template=PAIR_LAYOUT_TEMPLATE)
    # The encoder layout's template reproduces the HH split: conversations and transcripts agree.
    assert examples == [EXPECTED, EXPECTED]
    decoder_examples, _ = load(path, chat_template=TRANSCRIPT_TEMPLATE)
    assert decoder_examples[0].prompt == "\n\nHuman: Q\n\nAssistant:"
    assert decoder_examples[0].responses == (" good", " bad")


def test_a_chat_template_given_by_the_user_is_used(tmp_path):
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    row = {"prompt": [{"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad"}
    examples, _ = load(write_jsonl(tmp_path / "prefs.jsonl", [row]), chat_template=template)
    assert examples[0].prompt == "<|user|>Q<|end|><|assistant|>"
    assert examples[0].responses == ("good<|end|>", "bad<|end|>")


def test_ranked_rows_take_a_ranking_or_scores_and_list_best_first(tmp_path):
    rows = [
        {"prompt": "P", "responses": ["b", "c", "a"], "ranking": [2, 0, 1]},
        {"prompt": "P", "responses": ["x", "y", "z"], "scores": [1.0, 3.0, 1.0]},
    ]
    examples, _ = load(write_jsonl(tmp_path / "ranked.jsonl", rows))
    assert (examples[0].responses, examples[0].ranks) == (("a", "b", "c"), (0, 1, 2))
    # Equal scores are a tie: the pair (x, z) is never read as a preference.
    assert (examples[1].responses, examples[1].ranks) == (("y", "x", "z"), (0, 1, 1))
    assert examples[1].ordered_pairs() == [(0, 1), (0, 2)]


def test_margins_come_from_a_number_or_a_strength_label(tmp_path):
    rows = [{**EXPLICIT_ROW, "margin": 1.5}, {**EXPLICIT_ROW, "preference_strength": "Significantly better"}]
    examples, _ = load(write_jsonl(tmp_path / "prefs.jsonl", rows))
    assert [e.margin for e in examples] == [1.5, 3.0]
    custom, _ = load(write_jsonl(tmp_path / "prefs.jsonl", rows[1:]), strength_margins={"significantly better": 9})
    assert custom[0].margin == 9


def test_bad_rows_are_reported_with_file_line_and_reason_and_ties_are_counted(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(EXPLICIT_ROW),
                json.dumps({**EXPLICIT_ROW, "rejected": "good"}),  # tie
                "{not json",
                json.dumps({"chosen": "\n\nHuman: Q1\n\nAssistant: a", "rejected": "\n\nHuman: Q2\n\nAssistant: b"}),
                json.dumps({"prompt": "P", "responses": ["a", "b"], "ranking": [0, 0]}),
                json.dumps({**EXPLICIT_ROW, "margin": "large"}),
                json.dumps({"text": "no preference here"}),
            ]
        )
    )
    examples, report = load(path, max_bad_fraction=1.0)
    assert examples == [EXPECTED]
    assert (report.rows, report.kept, report.ties) == (7, 1, 1)
    assert report.bad == [
        f"{path}:line 3: invalid JSON (Expecting property name enclosed in double quotes)",
        f"{path}:line 4: implicit prompt: chosen and rejected transcripts differ before the final Assistant turn",
        f"{path}:line 5: ranking: expected a permutation of 0..1 (best first)",
        f"{path}:line 6: margin: expected a finite number",
        f"{path}:line 7: expected `chosen` and `rejected` columns, or `responses` with `ranking` or `scores`",
    ]


def test_loading_fails_when_too_many_rows_are_bad(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [EXPLICIT_ROW] * 9 + [{"chosen": 1, "rejected": 2}])
    assert load(path, max_bad_fraction=0.1)[1].bad_fraction == pytest.approx(0.1)
    with pytest.raises(DataError, match=r"1 of 10 rows are bad \(10.0%, more than the allowed 5.0%\)"):
        load(path, max_bad_fraction=0.05)


def test_an_unknown_file_type_is_refused_by_name(tmp_path):
    path = tmp_path / "prefs.xlsx"
    path.write_text("")
    with pytest.raises(DataError, match="prefs.xlsx: unknown format"):
        load(path)


def test_splits_are_stable_disjoint_and_sized_as_documented():
    files = default_data_files()
    splits = {name: load_preferences(files, split=name)[0] for name in ("train", "validation", "heldout")}
    everything, _ = load_preferences(files)
    assert sum(map(len, splits.values())) == len(everything)
    prompts = {name: {e.prompt for e in examples} for name, examples in splits.items()}
    assert not prompts["train"] & prompts["heldout"] and not prompts["validation"] & prompts["heldout"]
    assert not prompts["train"] & prompts["validation"]
    assert 0.2 < len(splits["heldout"]) / len(everything) < 0.3
    assert 0.07 < len(splits["validation"]) / len(everything) < 0.13
    assert all(split_of(e.prompt) == "heldout" for e in splits["heldout"])
