"""Checkpoint safety (`training.checkpointing`), in this process with a real Accelerator and a tiny model: writes that
only ever leave complete checkpoints, `latest` that skips incomplete ones, failed saves and unreadable random states
that say so, DataLoader workers that ignore SIGTERM, and following `accelerate launch`'s death.

The signals themselves, with real processes, are in test_pretraining.py and test_teminal.py."""

import errno
import json
import logging
import os
import random
import shutil
import signal

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from transformers_mgaclap.training import checkpointing
from transformers_mgaclap.training.checkpointing import (
    CHECKPOINT_FILES,
    CheckpointError,
    StopSignal,
    checkpoint_problem,
    ignore_sigterm,
    is_accelerate_launch,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    stop_with_launcher,
)

from conftest import reset_accelerate


@pytest.fixture
def run():
    """A prepared Accelerator with a tiny model and optimizer: what `save_state` writes for a real run."""
    reset_accelerate()
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    model, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    return accelerator, model


def names(output_dir) -> list[str]:
    """Everything in `output_dir`, hidden folders included."""
    return sorted(os.listdir(output_dir))


def test_a_checkpoint_is_written_aside_and_old_ones_deleted_after(run, tmp_path, monkeypatch):
    accelerator, _ = run
    save_checkpoint(accelerator, str(tmp_path), {"global_step": 1}, total_limit=1)
    seen = {}
    save_state = accelerator.save_state

    def recording_save_state(folder):
        save_state(folder)
        seen["folder"], seen["checkpoints"] = os.path.basename(folder), names(tmp_path)

    monkeypatch.setattr(accelerator, "save_state", recording_save_state)
    path = save_checkpoint(accelerator, str(tmp_path), {"global_step": 2, "loss": 0.5}, total_limit=1)

    # While step 2 was being written, under a name `latest` never takes, checkpoint-1 was still there.
    assert seen == {
        "folder": ".checkpoint-2.partial",
        "checkpoints": [".checkpoint-2.partial", "checkpoint-1"],
    }
    assert names(tmp_path) == ["checkpoint-2"] and checkpoint_problem(path) is None
    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["loss"] == 0.5
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(state[CHECKPOINT_FILES])


class Crash(BaseException):
    """A process killed at this point: no `except Exception` or clean-up runs."""


@pytest.mark.parametrize("second_step", [2, 1], ids=["new step, limit 1", "re-save of the same step"])
def test_a_kill_at_any_point_of_a_save_leaves_a_complete_checkpoint(run, tmp_path, monkeypatch, second_step):
    """Kill the second save after its files are written, and before each rename and deletion in turn: `latest`
    must always find a complete checkpoint, the first save's or the second's, and the next save must work."""
    accelerator, _ = run
    rename, rmtree, save_state = os.rename, shutil.rmtree, accelerator.save_state
    crash_point, crashed_at = 0, []
    while True:
        out = tmp_path / str(crash_point)
        save_checkpoint(accelerator, str(out), {"global_step": 1, "save": "first"}, total_limit=1)
        calls = []

        def kill_at(function, crash_point=crash_point, calls=calls):
            def call(*args, **kwargs):
                calls.append(function.__name__)
                if len(calls) > crash_point:
                    raise Crash
                return function(*args, **kwargs)

            return call

        monkeypatch.setattr(accelerator, "save_state", kill_at(save_state))
        monkeypatch.setattr(os, "rename", kill_at(rename))
        monkeypatch.setattr(shutil, "rmtree", kill_at(rmtree))
        try:
            save_checkpoint(
                accelerator, str(out), {"global_step": second_step, "save": "second"}, total_limit=1
            )
            finished = True
        except Crash:
            finished = False
        monkeypatch.undo()
        path = resolve_checkpoint(accelerator, str(out), "latest")
        assert path is not None and checkpoint_problem(path) is None, (calls, names(out))
        state = load_checkpoint(accelerator, path)
        expected = {(1, "first"), (second_step, "second")}
        assert (state["global_step"], state["save"]) in expected, (calls, names(out))
        assert not [name for name in names(out) if name.startswith(".")], calls  # interrupted saves tidied
        save_checkpoint(accelerator, str(out), {"global_step": 3, "save": "third"}, total_limit=1)
        assert names(out) == ["checkpoint-3"]
        if finished:
            break
        crashed_at.append(calls[-1])
        crash_point += 1
    # save_state, then the renames and deletions of the finishing steps, were each a crash point.
    assert crashed_at[0] == "save_state" and {"rename", "rmtree"} <= set(crashed_at), crashed_at


def write_checkpoint_folders(accelerator, output_dir) -> None:
    """checkpoint-1 and -2 complete; -50 holds step 49's state; -60 a truncated file; -99 is empty."""
    for step in (1, 2, 50, 60):
        save_checkpoint(accelerator, str(output_dir), {"global_step": step})
    state_file = output_dir / "checkpoint-50" / "trainer_state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "global_step": 49}))
    optimizer = output_dir / "checkpoint-60" / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    (output_dir / "checkpoint-99").mkdir()


def test_latest_takes_the_newest_complete_checkpoint_and_names_the_skipped_ones(run, tmp_path, caplog):
    accelerator, _ = run
    write_checkpoint_folders(accelerator, tmp_path)
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        path = resolve_checkpoint(accelerator, str(tmp_path), "latest")
    assert path == str(tmp_path / "checkpoint-2")
    assert load_checkpoint(accelerator, path) == {"global_step": 2}
    (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert "Skipped incomplete checkpoints" in warning
    assert "checkpoint-99 (no trainer_state.json" in warning
    assert "checkpoint-60 (optimizer.bin has 100 bytes instead of" in warning
    assert "checkpoint-50 (trainer_state.json is the state of step 49)" in warning


def test_an_incomplete_checkpoint_named_explicitly_is_an_error(run, tmp_path):
    accelerator, _ = run
    write_checkpoint_folders(accelerator, tmp_path)
    with pytest.raises(CheckpointError, match=r"Cannot resume from .*checkpoint-99: no trainer_state.json"):
        resolve_checkpoint(accelerator, str(tmp_path), str(tmp_path / "checkpoint-99"))
    with pytest.raises(CheckpointError, match="no such folder"):
        resolve_checkpoint(accelerator, str(tmp_path), str(tmp_path / "checkpoint-7"))
    assert resolve_checkpoint(accelerator, str(tmp_path), str(tmp_path / "checkpoint-1")).endswith(
        "checkpoint-1"
    )


def test_the_limit_deletes_complete_checkpoints_only(run, tmp_path):
    """An empty checkpoint-99 must not count as the one to keep: the checkpoint just written would go instead."""
    accelerator, _ = run
    save_checkpoint(accelerator, str(tmp_path), {"global_step": 1})
    (tmp_path / "checkpoint-99").mkdir()
    save_checkpoint(accelerator, str(tmp_path), {"global_step": 2}, total_limit=1)
    assert names(tmp_path) == ["checkpoint-2", "checkpoint-99"]
    assert resolve_checkpoint(accelerator, str(tmp_path), "latest") == str(tmp_path / "checkpoint-2")


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0"
        ),
    ],
    ids=["ENOSPC", "torch serialization"],
)
def test_a_failed_save_removes_its_files_keeps_the_earlier_checkpoints_and_says_so(
    run, tmp_path, monkeypatch, error
):
    accelerator, _ = run
    save_checkpoint(accelerator, str(tmp_path), {"global_step": 1})

    def full_disk(folder):
        os.makedirs(folder)
        (tmp_path / ".checkpoint-2.partial" / "model.safetensors").write_bytes(b"\0" * 10)
        raise error

    monkeypatch.setattr(accelerator, "save_state", full_disk)
    with pytest.raises(CheckpointError) as raised:
        save_checkpoint(accelerator, str(tmp_path), {"global_step": 2}, total_limit=1)
    message = str(raised.value)
    assert f"checkpoint-2 was not written ({type(error).__name__}: {error})" in message
    assert "Earlier checkpoints are intact: checkpoint-1." in message and raised.value.__cause__ is error
    assert names(tmp_path) == ["checkpoint-1"] and checkpoint_problem(str(tmp_path / "checkpoint-1")) is None


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_unreadable_random_states_stop_the_resume_before_anything_is_loaded(run, tmp_path, damage):
    accelerator, model = run
    path = save_checkpoint(accelerator, str(tmp_path), {"global_step": 1})
    states = tmp_path / "checkpoint-1" / "random_states_0.pkl"
    if damage == "missing":
        states.unlink()
    else:
        states.write_bytes(b"not a pickle")
    with torch.no_grad():
        model.weight.fill_(7.0)
    with pytest.raises(
        CheckpointError, match=r"Cannot resume exactly from .*random_states_0.pkl, the random states"
    ):
        load_checkpoint(accelerator, path)
    assert torch.all(model.weight == 7.0)  # nothing was restored


def test_resuming_restores_the_model_and_the_random_states(run, tmp_path):
    accelerator, model = run
    path = save_checkpoint(accelerator, str(tmp_path), {"global_step": 4, "train_log": [1.5]})
    weight, draws = model.weight.detach().clone(), torch.rand(3)
    with torch.no_grad():
        model.weight.zero_()
    torch.rand(5)
    assert load_checkpoint(accelerator, path) == {"global_step": 4, "train_log": [1.5]}
    torch.testing.assert_close(model.weight, weight)
    torch.testing.assert_close(torch.rand(3), draws)


class Draws(torch.utils.data.Dataset):
    """What a worker sees: its random draws (torch, numpy, random) and whether it ignores SIGTERM."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        draws = torch.tensor([torch.rand(()).item(), float(np.random.rand()), random.random()])
        return draws, signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_dataloader_workers_ignore_sigterm_and_draw_the_same_numbers():
    def load(**kwargs):
        loader = DataLoader(
            Draws(), batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(5), **kwargs
        )
        batches = list(loader)
        return torch.cat([draws for draws, _ in batches]), torch.cat([ignored for _, ignored in batches])

    plain, plain_ignores = load()
    draws, ignores = load(worker_init_fn=ignore_sigterm)
    torch.testing.assert_close(draws, plain, rtol=0, atol=0)
    assert ignores.all() and not plain_ignores.any()
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # only the workers


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/bin/python3", "/venv/bin/accelerate", "launch", "examples/pretrain.py"], True),
        (["/venv/bin/python3", "/venv/bin/accelerate-launch", "examples/pretrain.py"], True),
        (["python", "-m", "accelerate.commands.launch", "examples/pretrain.py"], True),
        (["python", "examples/pretrain.py"], False),
        (["nohup", "python", "examples/pretrain.py"], False),
        (["-bash"], False),
        (["/venv/bin/python3", "/venv/bin/accelerate", "config"], False),
        ([], False),
    ],
)
def test_only_accelerate_launch_counts_as_the_launcher(argv, expected):
    assert is_accelerate_launch(argv) is expected


@pytest.mark.parametrize("launcher_alive", [True, False])
def test_the_launchers_death_becomes_a_sigterm(monkeypatch, launcher_alive):
    """Armed under `accelerate launch`; a launcher already gone by then (the process was reparented) is a SIGTERM
    right away."""
    parents = iter([4242, 4242 if launcher_alive else 1])
    armed, sent = [], []
    monkeypatch.setattr(os, "getppid", lambda: next(parents))
    monkeypatch.setattr(
        checkpointing, "_command_line", lambda pid: ["python", "/venv/bin/accelerate", "launch", "x"]
    )
    monkeypatch.setattr(
        checkpointing, "_set_parent_death_signal", lambda signum: armed.append(signum) or True
    )
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    stop_with_launcher()
    assert armed == [signal.SIGTERM]
    assert sent == ([] if launcher_alive else [(os.getpid(), signal.SIGTERM)])


def test_a_plain_start_does_not_follow_its_parent(monkeypatch):
    monkeypatch.setattr(checkpointing, "_command_line", lambda pid: ["-bash"])
    monkeypatch.setattr(checkpointing, "_set_parent_death_signal", lambda signum: pytest.fail("armed"))
    stop_with_launcher()


def test_stop_signal_turns_sigterm_into_a_request_while_active(run):
    accelerator, _ = run
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.should_stop(accelerator)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.should_stop(accelerator)
    assert signal.getsignal(signal.SIGTERM) == before
