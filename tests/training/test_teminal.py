"""TeminAL-style post-training (`training.teminal`): two stages, checkpoints, a folder that reloads as remote code,
SIGTERM that checkpoints and a resume that continues."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor
from transformers_mgaclap.data.soundscapes import build_labelled_clip_dataset
from transformers_mgaclap.training.checkpointing import checkpoint_problem
from transformers_mgaclap.training.teminal import TemporalPostTrainingArguments, post_train_temporal

from conftest import EXAMPLES, reset_accelerate, run_example, tiny_model


@dataclass
class Start:
    """A tiny MGA-CLAP folder to post-train, its processor and model, and a folder of labelled clips."""

    folder: Path
    processor: MGAClapProcessor
    model: MGAClapModel
    clips: Path

    def arguments(self, out: Path, **overrides) -> TemporalPostTrainingArguments:
        defaults = dict(
            model_name_or_path=str(self.folder), dataset_name=str(self.clips), output_dir=str(out), stage_a_steps=1,
            stage_b_steps=1, pairs_per_batch=2, segment_seconds=1.0, learning_rate=1e-3, num_warmup_steps=0,
        )  # fmt: skip
        return TemporalPostTrainingArguments(**{**defaults, **overrides})


@pytest.fixture
def start(tmp_path, tiny_text_model_dir) -> Start:
    folder = tmp_path / "start"
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    build_labelled_clip_dataset(2, seed=0, duration=1.0, classes=["siren", "bell", "drip"]).save_to_disk(
        tmp_path / "clips"
    )
    return Start(folder, processor, model, tmp_path / "clips")


def train_log(out: Path) -> list[dict]:
    return json.loads((out / "post_training.json").read_text())["train_log"]


def test_post_training_runs_both_stages_and_reloads_with_remote_code(tmp_path, start):
    out = tmp_path / "post"
    reset_accelerate()
    assert post_train_temporal(start.arguments(out, checkpointing_steps=2)) == 0
    assert [(e["step"], e["stage"]) for e in train_log(out)] == [(1, "A"), (2, "B")]
    assert (out / "checkpoint-2").is_dir()

    remote = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    native = MGAClapModel.from_pretrained(out).eval()
    inputs = start.processor(
        text=["siren before bell"],
        audio=np.zeros(32000, np.float32),
        sampling_rate=32000,
        return_tensors="pt",
    )
    with torch.no_grad():
        reloaded, expected, before = remote(**inputs), native(**inputs), start.model(**inputs)
    torch.testing.assert_close(reloaded.audio_embeds, expected.audio_embeds, rtol=0, atol=0)
    torch.testing.assert_close(reloaded.text_embeds, expected.text_embeds, rtol=0, atol=0)
    assert not torch.allclose(reloaded.text_embeds, before.text_embeds)  # the post-training changed the model


def test_sigterm_saves_a_checkpoint_and_the_run_resumes_from_it(tmp_path, start):
    out = tmp_path / "post"
    args = ["--model_name_or_path", str(start.folder), "--dataset_name", str(start.clips), "--output_dir", str(out),
            "--stage_a_steps", "1", "--stage_b_steps", "500", "--pairs_per_batch", "2", "--segment_seconds", "1.0",
            "--learning_rate", "1e-3", "--num_warmup_steps", "0", "--logging_steps", "1"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "post_train_temporal.py"), *args], stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
    )  # fmt: skip
    try:
        for line in process.stderr:
            if "step 2/501" in line:
                break
        os.killpg(process.pid, signal.SIGTERM)
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 143, stderr
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    (checkpoint,) = out.glob("checkpoint-*")
    saved = json.loads((checkpoint / "trainer_state.json").read_text())
    step = saved["global_step"]
    assert (
        checkpoint_problem(str(checkpoint)) is None and checkpoint.name == f"checkpoint-{step}" and step >= 2
    )
    assert f"SIGTERM: checkpoint saved to {checkpoint}" in stderr

    reset_accelerate()
    resumed = start.arguments(out, stage_b_steps=step + 1, resume_from_checkpoint="latest")
    assert post_train_temporal(resumed) == 0
    log = train_log(out)
    assert [e["step"] for e in log] == list(range(1, step + 3))
    assert log[:step] == saved["train_log"]


def test_command_line_rejects_negative_stages(tmp_path):
    result = run_example("post_train_temporal.py", "--stage_a_steps", "-1", cwd=tmp_path)
    assert result.returncode != 0 and "Stage step counts must be >= 0" in result.stderr


def test_one_step_with_the_order_term_trains_and_logs_both_terms(tmp_path, start):
    out = tmp_path / "post"
    reset_accelerate()
    args = start.arguments(out, stage_a_steps=0, stage_b_steps=1, order_loss_weight=2.0)
    assert post_train_temporal(args) == 0
    (entry,) = train_log(out)
    assert entry["stage"] == "B" and np.isfinite(entry["order_loss"]) and entry["order_loss"] > 0
    assert entry["loss"] == pytest.approx(entry["tnce_loss"] + 2.0 * entry["order_loss"], rel=1e-5)
    changed = MGAClapModel.from_pretrained(out)
    assert any(
        not torch.equal(p, q) for p, q in zip(changed.parameters(), start.model.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    "option, value",
    [("order_loss_weight", -1.0), ("order_loss_weight", float("nan")), ("contrastive_loss_weight", -1.0),
     ("order_scale_seconds", 0.0)],
)  # fmt: skip
def test_loss_weights_are_checked(option, value):
    with pytest.raises(ValueError, match=f"--{option} must be a finite number"):
        TemporalPostTrainingArguments(**{option: value})
