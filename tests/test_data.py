import gzip
import json

from rewardserve.training.data import load_hh, split_of, split_transcript


def test_prompt_is_the_transcript_before_the_final_assistant_marker():
    transcript = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour\n\nAssistant:  Blue. "
    prompt, response = split_transcript(transcript)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour"
    assert response == "Blue."


def write_hh(path, rows):
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_ties_and_differing_conversations_are_dropped_and_counted(tmp_path):
    path = tmp_path / "helpful-base-test.jsonl.gz"
    write_hh(
        path,
        [
            {"chosen": "\n\nHuman: Q\n\nAssistant: good", "rejected": "\n\nHuman: Q\n\nAssistant: bad"},
            {"chosen": "\n\nHuman: Q\n\nAssistant: same", "rejected": "\n\nHuman: Q\n\nAssistant:  same"},
            {"chosen": "\n\nHuman: Q1\n\nAssistant: a", "rejected": "\n\nHuman: Q2\n\nAssistant: b"},
            {"chosen": "no assistant turn", "rejected": "\n\nHuman: Q\n\nAssistant: b"},
        ],
    )
    pairs, report = load_hh([path])
    assert [(p.prompt, p.chosen, p.rejected, p.source) for p in pairs] == [
        ("\n\nHuman: Q", "good", "bad", "helpful-base")
    ]
    assert report.kept == 1
    assert report.dropped == {"tie (identical responses)": 1, "conversations differ": 1, "malformed": 1}


def test_heldout_split_is_stable_disjoint_and_about_a_quarter(tmp_path):
    from rewardserve.training.data import default_data_files

    files = default_data_files()
    train, _ = load_hh(files, split="train")
    heldout, _ = load_hh(files, split="heldout")
    everything, _ = load_hh(files)
    assert len(train) + len(heldout) == len(everything)
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    assert 0.2 < len(heldout) / len(everything) < 0.3
    assert all(split_of(p.prompt) == "heldout" for p in heldout)
