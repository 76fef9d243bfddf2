"""Audio-caption data: column handling, bad files, caption normalisation, keyed randomness, duration buckets."""

import io
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, Dataset, load_from_disk

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.data.captions import (
    AudioCaptionCollator,
    DurationBucketBatchSampler,
    load_audio_caption_dataset,
    normalize_caption,
)


def wav_bytes(seconds: float, rate: int = 32000, frequency: float = 440.0) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture
def processor(tiny_text_model_dir):
    from transformers import AutoTokenizer

    return MGAClapProcessor(MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir))


def caption_dataset(audio, captions) -> Dataset:
    return Dataset.from_dict({"audio": audio, "text": captions}).cast_column("audio", Audio())


def test_normalize_caption_follows_the_official_rules():
    assert normalize_caption("A dog barks , then a Car passes.") == "a dog barks then a car passes "
    # One pass of "  " -> " " leaves 2 of the 3 spaces that '; "' became: the official code's behaviour.
    assert normalize_caption('Rain (heavy) falls; "loud"!') == "rain heavy falls  loud "
    assert normalize_caption("Birds|chirp*") == "birds chirp "


def test_loader_standardises_columns_and_drops_empty_captions():
    audio = [{"bytes": wav_bytes(1), "path": f"{i}.wav"} for i in range(4)]
    lists = load_audio_caption_dataset(
        [caption_dataset(audio, [["a tone"], [""], ["", "two"], ["x", "y"]])], caption_column="text"
    )
    assert lists.column_names == ["audio", "captions"]
    assert lists["captions"] == [["a tone"], ["two"], ["x", "y"]]  # the row without a caption is gone
    strings = load_audio_caption_dataset(
        [caption_dataset(audio, ["a", " ", "b", "c"])], caption_column="text"
    )
    assert strings["captions"] == [["a"], ["b"], ["c"]]


def test_loader_joins_clotho_style_caption_columns_of_a_saved_set(tmp_path):
    """The Hub's Clotho keeps five captions in `caption_1` ... `caption_5`: a clip's captions are all of them."""
    audio = [{"bytes": wav_bytes(1), "path": f"{i}.wav"} for i in range(3)]
    columns = {f"caption_{k}": [f"clip {i} caption {k}" for i in range(3)] for k in range(1, 6)}
    columns["caption_3"][1] = " "  # an empty caption is dropped, the clip keeps its four others
    columns["caption_2"][2] = "clip 2 caption 1"  # a repeated caption stays repeated, as in a list column
    Dataset.from_dict({"audio": audio, **columns}).cast_column("audio", Audio()).save_to_disk(
        tmp_path / "clotho"
    )
    loaded = load_audio_caption_dataset([str(tmp_path / "clotho")], caption_column=list(columns))
    assert loaded.column_names == ["audio", "captions"]
    assert loaded["captions"][0] == [f"clip 0 caption {k}" for k in range(1, 6)]
    assert loaded["captions"][1] == [f"clip 1 caption {k}" for k in (1, 2, 4, 5)]
    assert loaded["captions"][2][:2] == ["clip 2 caption 1", "clip 2 caption 1"]
    with pytest.raises(ValueError, match="no column 'caption_6'"):
        load_audio_caption_dataset([str(tmp_path / "clotho")], caption_column=[*columns, "caption_6"])


def test_loader_names_a_missing_column():
    audio = [{"bytes": wav_bytes(1), "path": "a.wav"}]
    with pytest.raises(ValueError, match=r"no column 'caption'.*\['audio', 'text'\]"):
        load_audio_caption_dataset([caption_dataset(audio, ["x"])], caption_column="caption")


def test_loader_reads_save_to_disk_and_audiofolder(tmp_path):
    saved = tmp_path / "saved"
    caption_dataset([{"bytes": wav_bytes(1), "path": "a.wav"}], ["a tone"]).save_to_disk(saved)
    assert load_audio_caption_dataset([str(saved)], caption_column="text")["captions"] == [["a tone"]]
    folder = tmp_path / "folder" / "train"
    folder.mkdir(parents=True)
    (folder / "x.wav").write_bytes(wav_bytes(1))
    (folder / "metadata.csv").write_text("file_name,caption\nx.wav,a beep\n")
    loaded = load_audio_caption_dataset([str(tmp_path / "folder")], split="train")
    assert loaded["captions"] == [["a beep"]]
    assert isinstance(load_from_disk(str(saved)), Dataset)


def test_collator_skips_unreadable_audio_and_counts_it(processor, caplog):
    examples = [
        {"audio": {"bytes": wav_bytes(2), "path": "good.wav"}, "captions": ["a tone"]},
        {"audio": {"bytes": b"not audio at all", "path": "corrupt.wav"}, "captions": ["noise"]},
        {"audio": {"bytes": wav_bytes(3, frequency=880), "path": "good2.wav"}, "captions": ["a higher tone"]},
    ]
    with caplog.at_level(logging.WARNING):
        batch = AudioCaptionCollator(processor)(examples)
    assert batch["num_skipped"].item() == 1 and "corrupt.wav" in caplog.text
    assert batch["input_features"].shape == (2, 1001, 64) and batch["input_ids"].shape[0] == 2
    with pytest.raises(ValueError, match="corrupt.wav"):
        AudioCaptionCollator(processor, strict=True)(examples)


def test_collator_resamples_and_is_deterministic_per_epoch(processor):
    examples = [
        {"audio": {"bytes": wav_bytes(12, rate=48000), "path": "long.wav"}, "captions": ["a", "b", "c"]}
    ]
    collator = AudioCaptionCollator(processor, seed=1)
    first, again = collator(examples), collator(examples)
    torch.testing.assert_close(first["input_features"], again["input_features"])  # same epoch: same choices
    assert first["input_features"].shape == (1, 1001, 64)  # 12 s at 48 kHz -> a random 10 s crop at 32 kHz
    choices = set()
    for epoch in range(8):
        collator.epoch = epoch
        choices.add(tuple(collator(examples)["input_ids"][0].tolist()))
    assert len(choices) > 1  # the sampled caption changes across epochs


def test_evaluation_collator_keeps_every_caption(processor):
    examples = [
        {"audio": {"bytes": wav_bytes(1), "path": "a.wav"}, "captions": ["one", "two"]},
        {"audio": {"bytes": wav_bytes(1), "path": "b.wav"}, "captions": ["three"]},
    ]
    batch = AudioCaptionCollator(processor, train=False)(examples)
    assert batch["text_to_audio"].tolist() == [0, 0, 1] and batch["input_ids"].shape[0] == 3


def test_duration_buckets_group_similar_clips_and_reshuffle_per_epoch():
    durations = [3.0] * 10 + [7.5] * 9 + [12.0] * 8 + [40.0] * 4
    sampler = DurationBucketBatchSampler(durations, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 2 + 2 + 1  # each bucket's remainder is dropped
    for batch in batches:
        assert len(batch) == 4 and len({durations[i] for i in batch}) == 1
    assert len({i for batch in batches for i in batch}) == 28
    assert list(sampler) == batches  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_fused_collator_carries_is_longer_and_seeded_crops(tiny_text_model_dir):
    """With a fused extractor the collator's batches hold `is_longer`; training crops are random but keyed."""
    from transformers import AutoTokenizer

    fused = MGAClapProcessor(
        MGAClapFeatureExtractor(enable_fusion=True), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    noise = np.random.default_rng(0).standard_normal(30 * 32000).astype(np.float32) * 0.1
    buffer = io.BytesIO()
    sf.write(buffer, noise, 32000, format="WAV")
    examples = [
        {"audio": {"bytes": buffer.getvalue(), "path": "long.wav"}, "captions": ["rain"]},
        {"audio": {"bytes": wav_bytes(3), "path": "short.wav"}, "captions": ["a tone"]},
    ]
    for train in (True, False):
        batch = AudioCaptionCollator(fused, train=train, seed=1)(examples)
        assert batch["is_longer"].tolist() == [True, False]
        assert batch["input_features"].shape == (2, 4, 1001, 64)
    evaluation = AudioCaptionCollator(fused, train=False)
    torch.testing.assert_close(evaluation(examples)["input_features"], evaluation(examples)["input_features"])
    collator = AudioCaptionCollator(fused, train=True, seed=1)
    first, again = collator(examples)["input_features"], collator(examples)["input_features"]
    torch.testing.assert_close(first, again)  # same seed and epoch: same crops
    crops = set()
    for epoch in range(6):
        collator.epoch = epoch
        crops.add(collator(examples)["input_features"][0, 1, :, 0].sum().item())
    assert len(crops) > 1  # the local crops are drawn anew each epoch
