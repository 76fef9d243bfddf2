"""Checkpoints, resuming and stopping on SIGTERM, for both training loops (pre-training and TeminAL post-training).

A checkpoint is `<output_dir>/checkpoint-<step>`: Accelerate's `save_state` (model, optimizer, scheduler, random
states, anything registered for checkpointing) plus `trainer_state.json`, the loop's own state (`global_step`, logs).
"""

import json
import os
import re
import shutil
import signal

import torch
from accelerate.logging import get_logger

logger = get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")


def checkpoint_folders(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folders of `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [name for name in os.listdir(output_dir) if _CHECKPOINT_NAME.fullmatch(name)]
    return [os.path.join(output_dir, name) for name in sorted(names, key=lambda n: int(n.split("-")[1]))]


def save_checkpoint(accelerator, output_dir: str, state: dict, total_limit: int | None = None) -> str:
    """Save the accelerator's state and `state` (which holds `global_step`) as `checkpoint-<global_step>`.

    With `total_limit`, the oldest checkpoints are deleted so that at most `total_limit` remain.
    """
    if accelerator.is_main_process and total_limit is not None:
        existing = checkpoint_folders(output_dir)
        # Make room for the one about to be written.
        for old in existing[: max(0, len(existing) - total_limit + 1)]:
            shutil.rmtree(old)
    path = os.path.join(output_dir, f"checkpoint-{state['global_step']}")
    accelerator.save_state(path)
    if accelerator.is_main_process:
        with open(os.path.join(path, TRAINER_STATE), "w") as file:
            json.dump(state, file, indent=2)
    accelerator.wait_for_everyone()
    logger.info(f"Saved checkpoint {path}")
    return path


def resolve_checkpoint(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint to resume from: `"latest"` is the newest of `output_dir` (`None` if there is none), any other
    value a checkpoint folder."""
    if resume_from_checkpoint != "latest":
        return resume_from_checkpoint
    folders = checkpoint_folders(output_dir)
    return folders[-1] if folders else None


def load_checkpoint(accelerator, path: str) -> dict:
    """Restore the accelerator's state from `path`; returns the loop's saved `trainer_state.json`."""
    accelerator.load_state(path)
    with open(os.path.join(path, TRAINER_STATE)) as file:
        state = json.load(file)
    logger.info(f"Resumed from {path} at step {state['global_step']}")
    return state


class StopSignal:
    """Turns SIGTERM (preemption, `scancel`, `kill`) into a request to checkpoint and stop after the current step.

    Every process must agree to stop at the same step: [`should_stop`] takes the maximum over processes.
    """

    EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_) -> None:
        self.requested = True

    def should_stop(self, accelerator) -> bool:
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, "max") > 0)


__all__ = ["StopSignal", "checkpoint_folders", "load_checkpoint", "resolve_checkpoint", "save_checkpoint"]
