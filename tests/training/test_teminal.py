"""TeminAL-style post-training (`training.teminal`): two stages, checkpoints, a folder that reloads as remote code."""

import json

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor
from transformers_mgaclap.data.soundscapes import build_labelled_clip_dataset
from transformers_mgaclap.training.teminal import TemporalPostTrainingArguments, post_train_temporal

from conftest import reset_accelerate, run_example, tiny_model


def test_post_training_runs_both_stages_and_reloads_with_remote_code(tmp_path, tiny_text_model_dir):
    start = tmp_path / "start"
    initial = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    initial.save_pretrained(start)
    processor.save_pretrained(start)
    build_labelled_clip_dataset(2, seed=0, duration=1.0, classes=["siren", "bell", "drip"]).save_to_disk(
        tmp_path / "clips"
    )
    out = tmp_path / "post"
    reset_accelerate()
    arguments = TemporalPostTrainingArguments(
        model_name_or_path=str(start), dataset_name=str(tmp_path / "clips"), output_dir=str(out), stage_a_steps=1,
        stage_b_steps=1, pairs_per_batch=2, segment_seconds=1.0, learning_rate=1e-3, num_warmup_steps=0,
        checkpointing_steps=2,
    )  # fmt: skip
    assert post_train_temporal(arguments) == 0
    log = json.loads((out / "post_training.json").read_text())["train_log"]
    assert [(e["step"], e["stage"]) for e in log] == [(1, "A"), (2, "B")]
    assert (out / "checkpoint-2").is_dir()

    remote = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    native = MGAClapModel.from_pretrained(out).eval()
    inputs = processor(
        text=["siren before bell"],
        audio=np.zeros(32000, np.float32),
        sampling_rate=32000,
        return_tensors="pt",
    )
    with torch.no_grad():
        reloaded, expected, before = remote(**inputs), native(**inputs), initial(**inputs)
    torch.testing.assert_close(reloaded.audio_embeds, expected.audio_embeds, rtol=0, atol=0)
    torch.testing.assert_close(reloaded.text_embeds, expected.text_embeds, rtol=0, atol=0)
    assert not torch.allclose(reloaded.text_embeds, before.text_embeds)  # the post-training changed the model


def test_command_line_rejects_negative_stages(tmp_path):
    result = run_example("post_train_temporal.py", "--stage_a_steps", "-1", cwd=tmp_path)
    assert result.returncode != 0 and "Stage step counts must be >= 0" in result.stderr
