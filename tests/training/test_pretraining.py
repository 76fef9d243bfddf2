"""Pre-training (`training.pretraining`): a smoke run that produces a published folder, exact resume, SIGTERM on the
command line (to the trainer, to its process group with DataLoader workers, to `accelerate launch`), a SIGKILL inside
a save, two processes = one."""

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel, AutoProcessor

from transformers_mgaclap.hub.model_card import SYNTHETIC_SOUNDSCAPES, SYNTHETIC_SOUNDSCAPES_TYPE
from transformers_mgaclap.training.checkpointing import checkpoint_problem
from transformers_mgaclap.training.pretraining import CARD_FIGURE, PretrainingArguments, pretrain
from transformers_mgaclap.utils.cli import DataclassArgumentParser

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
    (args,) = DataclassArgumentParser(PretrainingArguments).parse_args_into_dataclasses(argv)
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
    # The model-index names the data its metrics come from: the synthetic soundscapes, not a split name.
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        (SYNTHETIC_SOUNDSCAPES_TYPE, SYNTHETIC_SOUNDSCAPES, "validation")
    }
    # ... and the card shows the frame similarity of a held-out clip, published next to it.
    assert f"]({CARD_FIGURE})" in card.text
    assert (out / CARD_FIGURE).read_bytes().startswith(b"\x89PNG")


def test_validation_split_none_also_skips_the_synthetic_validation(tmp_path, tiny_text_model_dir):
    out = tmp_path / "run"
    args = tiny_args(out, tiny_text_model_dir, "--max_train_steps", "2", "--eval_steps", "1")
    assert run_in_process(args + ["--validation_split", "none"]) == 0
    assert json.loads((out / "training_history.json").read_text())["history"] == []
    assert not ModelCard.load(out / "README.md").data.eval_results  # no metrics, no model-index


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


class Stderr:
    """A process's stderr, read in the background (the process must never block on a full pipe)."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(process.stderr), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not any(text in line for line in list(self.lines)):
            assert time.time() < deadline, f"no {text!r} in:\n{self.text}"
            time.sleep(0.1)

    def read_to_end(self, timeout: float = 120) -> str:
        """Everything, once every process holding the pipe has closed it."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the pipe is still open after {timeout} s:\n{self.text}"
        return self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)


def start_example(command: list[str], **popen) -> tuple[subprocess.Popen, Stderr]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", **popen.pop("env", {}))
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True, env=env,
        **popen,
    )  # fmt: skip
    return process, Stderr(process)


def newest_checkpoint(output_dir: Path) -> tuple[Path, int]:
    """The newest checkpoint folder, which must be complete, and its step."""
    path = max(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoint_problem(str(path)) is None, checkpoint_problem(str(path))
    return path, json.loads((path / "trainer_state.json").read_text())["global_step"]


def ignoring_sigterm(process: psutil.Process) -> list[psutil.Process]:
    """The children of `process` that ignore SIGTERM (bit 15 of SigIgn in /proc/PID/status)."""
    children = []
    for child in process.children():
        with open(f"/proc/{child.pid}/status") as status:
            ignored = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
        if ignored >> (signal.SIGTERM - 1) & 1:
            children.append(child)
    return children


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_to_the_process_group_with_dataloader_workers_saves_a_checkpoint(
    tmp_path, tiny_text_model_dir
):
    """Slurm, `timeout` and systemd signal the whole group: the DataLoader workers must not die of it."""
    out = tmp_path / "run"
    args = tiny_args(out, tiny_text_model_dir, "--dataloader_num_workers", "2", "--max_train_steps", "400",
                     "--validation_split", "none")  # fmt: skip
    process, stderr = start_example(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, start_new_session=True
    )
    try:
        stderr.wait_for("Running training")
        trainer = psutil.Process(process.pid)
        # Workers are set up once their init function ran, after which they ignore SIGTERM (without the fix: never).
        deadline = time.time() + 30
        while len(ignoring_sigterm(trainer)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        workers = trainer.children()
        assert len(workers) == 2
        os.killpg(process.pid, signal.SIGTERM)  # kill -TERM -- -PGID
        assert process.wait(timeout=120) == 143, stderr.read_to_end()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = stderr.read_to_end()
    assert "killed by signal" not in text and "SIGTERM: checkpoint saved to" in text
    path, step = newest_checkpoint(out)
    assert f"Saved checkpoint {path}" in text and 1 <= step < 400
    assert psutil.wait_procs(workers, timeout=30)[1] == []  # the workers, which ignore SIGTERM, ended too


@contextmanager
def adopting_orphans():
    """Make this process a child subreaper: an orphaned descendant becomes its child, whose exit status it can read."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        libc.prctl(36, 0, 0, 0, 0)


def exit_code_of(pid: int, timeout: float) -> int | None:
    """The exit code of child `pid`, or `None` if it is still running after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.2)
    return None


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_sigterm_to_accelerate_launch_stops_the_trainer_with_a_checkpoint(tmp_path, tiny_text_model_dir):
    """Accelerate's single-process launcher forwards no signal: the trainer must stop when the launcher dies."""
    out = tmp_path / "run"
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    args = tiny_args(out, tiny_text_model_dir, "--max_train_steps", "1000", "--validation_split", "none")
    with adopting_orphans():
        launcher, stderr = start_example(
            [*launch, str(SCRIPT), *args], cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")}
        )
        started = [psutil.Process(launcher.pid)]
        try:
            stderr.wait_for("Running training")
            started += started[0].children()
            trainer = started[1]
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(timeout=60) == -signal.SIGTERM  # the launcher just dies
            code = exit_code_of(trainer.pid, timeout=120)
        finally:
            for process in started:
                if process.is_running():
                    process.kill()
                    process.wait()
    # The trainer's final words, through the stderr it inherited from the launcher.
    text = stderr.read_to_end()
    assert code == 143, text
    path, step = newest_checkpoint(out)
    assert f"SIGTERM: checkpoint saved to {path}" in text and step < 1000


SLOW_SAVE = """
import os, sys, time
import accelerate

save_state = accelerate.Accelerator.save_state


def slow_save_state(self, output_dir=None, **kwargs):
    result = save_state(self, output_dir, **kwargs)
    if "checkpoint-2" in os.path.basename(output_dir):
        print("FILES OF STEP 2 WRITTEN", file=sys.stderr, flush=True)
        time.sleep(300)
    return result


accelerate.Accelerator.save_state = slow_save_state
"""


def test_sigkill_during_a_save_keeps_the_last_complete_checkpoint(tmp_path, tiny_text_model_dir, caplog):
    """With --checkpoints_total_limit 1, killed while checkpoint 2 is being written: `latest` resumes from 1."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_SAVE)
    out = tmp_path / "run"
    args = tiny_args(out, tiny_text_model_dir, "--max_train_steps", "2", "--checkpointing_steps", "1",
                     "--checkpoints_total_limit", "1", "--validation_split", "none")  # fmt: skip
    python_path = os.pathsep.join([str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])])
    process, stderr = start_example(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, env={"PYTHONPATH": python_path}
    )
    try:
        stderr.wait_for("FILES OF STEP 2 WRITTEN")
    finally:
        process.kill()
    process.wait()
    assert newest_checkpoint(out) == (out / "checkpoint-1", 1)
    assert sorted(p.name for p in out.glob("*checkpoint-*")) == [".checkpoint-2.partial", "checkpoint-1"]

    with caplog.at_level("INFO"):
        assert run_in_process([*args, "--resume_from_checkpoint", "latest"]) == 0
    assert f"Resumed from {out / 'checkpoint-1'} at step 1" in caplog.text
    assert [entry["step"] for entry in train_log(out)] == [1, 2]
    assert sorted(p.name for p in out.glob("*checkpoint-*")) == [
        "checkpoint-2"
    ]  # the partial folder was removed


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
    assert one["flag_seen"] and two["flag_seen"]  # process 0 learns the flag only process 1 raised
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
