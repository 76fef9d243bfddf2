"""Pre-training (`training.pretraining`): a smoke run that produces a published folder, exact resume, SIGTERM on the
command line, two processes = one."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoProcessor, HfArgumentParser

from transformers_mgaclap.training.pretraining import PretrainingArguments, pretrain

from conftest import EXAMPLES, TINY_AUDIO, reset_accelerate

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = EXAMPLES / "pretrain.py"
TINY_MODEL = json.dumps(
    {
        "audio_config": dict(TINY_AUDIO, drop_path_rate=0.1),
        "codebook_size": 32,
        "projection_dim": 16,
        "codebook_affinity_scale": 0.5,
    }
)


def tiny_args(output_dir, text_model_dir, *extra) -> list[str]:
    return [
        "--output_dir", str(output_dir),
        "--text_model_name_or_path", str(text_model_dir),
        "--synthetic_train_clips", "32",
        "--synthetic_validation_clips", "8",
        "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "8",
        "--model_config_overrides", TINY_MODEL,
        "--dataloader_num_workers", "0",
        "--logging_steps", "1",
        "--seed", "3",
        *extra,
    ]  # fmt: skip


def run_in_process(argv: list[str]) -> int:
    """What `examples/pretrain.py ARGV` does, in this process: parse the arguments and pre-train."""
    reset_accelerate()
    (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses(argv)
    return pretrain(args)


def train_log(folder: Path) -> list[dict]:
    return json.loads((folder / "training_history.json").read_text())["train_log"]


def test_smoke_run_produces_a_loadable_folder(tmp_path, tiny_text_model_dir):
    out = tmp_path / "run"
    code = run_in_process(
        tiny_args(out, tiny_text_model_dir, "--max_train_steps", "4", "--eval_steps", "2", "--checkpointing_steps", "2",
                  "--checkpoints_total_limit", "1")
    )  # fmt: skip
    assert code == 0
    log = train_log(out)
    assert [entry["step"] for entry in log] == [1, 2, 3, 4] and all(math.isfinite(e["loss"]) for e in log)
    history = json.loads((out / "training_history.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 4] and 0 <= history[-1]["t2a_R@1"] <= 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]  # rotated to the newest
    assert (out / "best_model" / "model.safetensors").exists()

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    inputs = processor(
        text=["a bell rings"], audio=torch.zeros(32000).numpy(), sampling_rate=32000, return_tensors="pt"
    )
    assert model(**inputs).logits_per_audio.shape == (1, 1)

    # The output folder is published: code, pipeline, endpoint handler and card, ready for --push_to_hub.
    assert {"handler.py", "requirements.txt", "pipeline_mgaclap.py", "endpoint_handler.py"} <= {
        p.name for p in out.iterdir()
    }
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-audio-classification"
    assert "trust_remote_code=True" in card.text


def test_real_data_path_with_duration_buckets(tmp_path, tiny_text_model_dir):
    """A save_to_disk folder with a duration column, trained with --group_by_duration."""
    from datasets import concatenate_datasets

    from transformers_mgaclap.data.soundscapes import build_soundscape_dataset

    short = build_soundscape_dataset(8, seed=1, duration=4.0)
    long = build_soundscape_dataset(8, seed=2)
    data = concatenate_datasets(
        [short.add_column("seconds", [4.0] * 8), long.add_column("seconds", [10.0] * 8)]
    )
    data.save_to_disk(tmp_path / "data")
    out = tmp_path / "run"
    args = tiny_args(out, tiny_text_model_dir, "--max_train_steps", "2", "--validation_split", "none")
    args += ["--dataset_name", str(tmp_path / "data"), "--caption_column", "captions", "--group_by_duration",
             "--duration_column", "seconds", "--per_device_train_batch_size", "4"]  # fmt: skip
    assert run_in_process(args) == 0
    assert [entry["step"] for entry in train_log(out)] == [1, 2]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, tiny_text_model_dir):
    """Dropout, drop-path and SpecAugment are on: resuming must restore every random state."""
    full = tmp_path / "full"
    args = (
        "--max_train_steps",
        "6",
        "--checkpointing_steps",
        "3",
        "--validation_split",
        "none",
        "--spec_augment",
        "true",
    )
    assert run_in_process(tiny_args(full, tiny_text_model_dir, *args)) == 0
    resumed = tmp_path / "resumed"
    resume = ("--resume_from_checkpoint", str(full / "checkpoint-3"))
    assert run_in_process(tiny_args(resumed, tiny_text_model_dir, *args, *resume)) == 0
    full_log, resumed_log = train_log(full), train_log(resumed)
    assert [e["step"] for e in resumed_log] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full_log[3:], resumed_log[3:], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), (full_log, resumed_log)
    assert len({round(e["loss"], 6) for e in full_log}) == 6  # the losses do move


def test_sigterm_saves_a_checkpoint(tmp_path, tiny_text_model_dir):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT),
         *tiny_args(out, tiny_text_model_dir, "--max_train_steps", "200", "--validation_split", "none")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 240
    for line in process.stderr:
        if "Running training" in line or time.time() > deadline:
            break
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    process.stderr.read()
    assert process.wait(timeout=240) == 143
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1
    state = json.loads((checkpoints[0] / "trainer_state.json").read_text())
    assert checkpoints[0].name == f"checkpoint-{state['global_step']}" and state["global_step"] < 200
    assert (checkpoints[0] / "model.safetensors").exists() and (checkpoints[0] / "optimizer.bin").exists()


def run_group(command: list[str], env: dict, timeout: float = 120) -> None:
    """Run a command; on timeout kill it and every descendant (torchrun starts its workers in new sessions)."""
    import psutil

    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        assert process.wait(timeout=timeout) == 0, f"{command} failed"
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        raise


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_two_processes_equal_one(tmp_path, variant):
    """One step on a global batch of 8: torchrun with 2 CPU processes (gloo) vs one process, loss and gradients."""
    helper = ROOT / "tests" / "training" / "distributed_step.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"))
    single = tmp_path / "single.pt"
    double = tmp_path / "double.pt"
    run_group([sys.executable, str(helper), str(single), variant], env)
    run_group(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(helper), str(double), variant],
        env,
    )  # fmt: skip
    one, two = torch.load(single, weights_only=True), torch.load(double, weights_only=True)
    assert one["loss"].item() == pytest.approx(two["loss"].item(), abs=1e-5)
    assert one["grads"].keys() == two["grads"].keys()
    for name, grad in one["grads"].items():
        torch.testing.assert_close(two["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fusion_training_with_augmented_captions_saves_a_fused_model(tmp_path, tiny_text_model_dir):
    """--enable_fusion on clips over and under 10 s plus --text_augment_selection all; the folder reloads."""
    from datasets import concatenate_datasets

    from transformers_mgaclap import MGAClapModel
    from transformers_mgaclap.data.soundscapes import build_soundscape_dataset

    long = build_soundscape_dataset(4, seed=1, duration=14.0)
    short = build_soundscape_dataset(4, seed=2, duration=4.0)
    data = concatenate_datasets([long, short])
    data = data.add_column("caption_aug", [f"the sound of {labels[0]}" for labels in data["labels"]])
    data.save_to_disk(tmp_path / "data")
    out = tmp_path / "run"
    args = tiny_args(out, tiny_text_model_dir, "--max_train_steps", "3", "--validation_split", "none")
    args += ["--dataset_name", str(tmp_path / "data"), "--caption_column", "captions", "--enable_fusion",
             "--text_augment_selection", "all", "--per_device_train_batch_size", "4"]  # fmt: skip
    assert run_in_process(args) == 0
    log = train_log(out)
    assert [e["step"] for e in log] == [1, 2, 3] and all(math.isfinite(e["loss"]) for e in log)

    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    assert model.config.enable_fusion and processor.feature_extractor.enable_fusion
    clip = torch.randn(14 * 32000).numpy() * 0.1
    inputs = processor(text=["a bell rings"], audio=clip, sampling_rate=32000, return_tensors="pt")
    assert inputs["is_longer"].tolist() == [True]
    direct = MGAClapModel.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits_per_audio, direct(**inputs).logits_per_audio)
