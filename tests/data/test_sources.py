"""The one dataset loader and the one reader of a dataset's audio column."""

import io

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict

from transformers_mgaclap.audio_input import AudioInputError
from transformers_mgaclap.data.sources import (
    is_saved_dataset,
    iterate_waveforms,
    load_dataset_source,
    load_waveforms,
)


def wav_bytes(seconds: float, rate: int = 32000, frequency: float = 440.0) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(
        buffer,
        (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32),
        rate,
        format="WAV",
        subtype="FLOAT",
    )
    return buffer.getvalue()


def tiny(captions=("a", "b")) -> Dataset:
    audio = [
        {"bytes": wav_bytes(0.5, frequency=300 + 100 * i), "path": f"{i}.wav"} for i in range(len(captions))
    ]
    return Dataset.from_dict({"audio": audio, "caption": list(captions)}).cast_column("audio", Audio())


def test_every_kind_of_source(tmp_path):
    dataset = tiny()
    assert load_dataset_source(dataset) is dataset
    splits = DatasetDict({"train": dataset, "test": tiny(("c",))})
    assert load_dataset_source(splits, split="test")["caption"] == ["c"]

    dataset.save_to_disk(tmp_path / "saved")
    assert is_saved_dataset(tmp_path / "saved")
    assert load_dataset_source(str(tmp_path / "saved"))["caption"] == ["a", "b"]
    splits.save_to_disk(tmp_path / "saved_dict")
    assert load_dataset_source(tmp_path / "saved_dict", split="test")["caption"] == ["c"]
    with pytest.raises(ValueError, match=r"Split 'validation' not in .*it has \['train', 'test'\]"):
        load_dataset_source(tmp_path / "saved_dict", split="validation")

    folder = tmp_path / "audiofolder" / "train"
    folder.mkdir(parents=True)
    (folder / "x.wav").write_bytes(wav_bytes(1))
    (folder / "metadata.csv").write_text("file_name,caption\nx.wav,a beep\n")
    assert not is_saved_dataset(tmp_path / "audiofolder")
    assert load_dataset_source(tmp_path / "audiofolder")["caption"] == ["a beep"]

    dataset.remove_columns("audio").to_parquet(tmp_path / "parquet" / "train.parquet")
    assert load_dataset_source(tmp_path / "parquet")["caption"] == ["a", "b"]


def test_waveforms_come_through_the_audio_input_layer():
    dataset = tiny(("a", "b", "c"))
    batches = list(iterate_waveforms(dataset, "audio", 16000, batch_size=2))
    assert [indices for indices, _ in batches] == [[0, 1], [2]]
    waveforms = load_waveforms(dataset, "audio", 16000)
    assert [w.shape for w in waveforms] == [(8000,)] * 3 and all(w.dtype == np.float32 for w in waveforms)
    native = load_waveforms(dataset, "audio", 32000)
    np.testing.assert_allclose(
        native[1], sf.read(io.BytesIO(wav_bytes(0.5, frequency=400)), dtype="float32")[0]
    )

    broken = Dataset.from_dict(
        {
            "audio": [
                {"bytes": wav_bytes(0.5), "path": "fine.wav"},
                {"bytes": b"junk" * 50, "path": "broken.wav"},
            ]
        }
    ).cast_column("audio", Audio())
    with pytest.raises(AudioInputError, match=r"example 1 \(broken.wav\)"):
        load_waveforms(broken, "audio", 32000)


def test_progress_is_a_bar_in_clips_on_stderr_only_when_asked(capfd):
    dataset = tiny(("a", "b", "c"))
    load_waveforms(dataset, "audio", 16000)
    assert capfd.readouterr() == ("", "")
    load_waveforms(dataset, "audio", 16000, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "Decoding" in err and "3/3" in err and "clips" in err
