"""Checkpoints, resuming and stopping on SIGTERM, for both training loops (pre-training and TeminAL post-training).

A checkpoint is `<output_dir>/checkpoint-<step>`: Accelerate's `save_state` (model, optimizer, scheduler, random
states, anything registered for checkpointing) plus `trainer_state.json`, the loop's own state (`global_step`, logs)
with the list of files the save wrote. It is written to the hidden `.checkpoint-<step>.partial` and renamed into
place once every process has written its files, and older checkpoints are deleted only after that: a process killed
at any moment leaves the previous checkpoints usable, and `--resume_from_checkpoint latest` takes the newest complete
one.

SIGTERM (preemption, `scancel`, `timeout`, Kubernetes) makes a loop finish its step, checkpoint and exit with 143,
whether it is sent to the trainer, to its whole process group (DataLoader workers ignore it) or to the
`accelerate launch` that started it (see [`stop_with_launcher`]).
"""

import ctypes
import json
import os
import re
import shutil
import signal

import torch
from accelerate.logging import get_logger
from accelerate.utils import load

logger = get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
# Key of trainer_state.json: {path relative to the checkpoint: size in bytes} of every file the save wrote.
CHECKPOINT_FILES = "checkpoint_files"
# Checkpoints written before that list existed are checked for the one file Accelerate always writes.
_FILES_OF_OLDER_CHECKPOINTS = {"random_states_0.pkl": None}
_CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# Hidden folders of a save in progress: the new checkpoint, one it replaces (same step), one being deleted.
_TRANSIENT_NAME = re.compile(r"\.checkpoint-(\d+)\.(partial|previous|deleted)")


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written, or that a run cannot resume from; the message says which and why."""


def checkpoint_folders(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folders of `output_dir`, oldest first, complete or not."""
    if not os.path.isdir(output_dir):
        return []
    names = [name for name in os.listdir(output_dir) if _CHECKPOINT_NAME.fullmatch(name)]
    return [os.path.join(output_dir, name) for name in sorted(names, key=lambda n: int(n.split("-")[1]))]


def checkpoint_problem(path: str) -> str | None:
    """Why `path` is not a complete checkpoint, or `None` when it is one.

    Complete: a readable `trainer_state.json` whose `global_step` matches the folder's name, and every file the save
    wrote, at the size it was written.
    """
    if not os.path.isdir(path):
        return "no such folder"
    try:
        with open(os.path.join(path, TRAINER_STATE)) as file:
            state = json.load(file)
    except FileNotFoundError:
        return f"no {TRAINER_STATE}: its save did not finish"
    except (OSError, ValueError) as error:
        return f"unreadable {TRAINER_STATE} ({error})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE} holds no global_step"
    name = _CHECKPOINT_NAME.fullmatch(os.path.basename(os.path.normpath(path)))
    if name and state["global_step"] != int(name[1]):
        return f"{TRAINER_STATE} is the state of step {state['global_step']}"
    return _missing_file(path, state.get(CHECKPOINT_FILES, _FILES_OF_OLDER_CHECKPOINTS))


def _missing_file(path: str, files: dict[str, int | None]) -> str | None:
    """The first of `files` (name: size, `None` for any size) that `path` lacks or holds at another size."""
    for name, size in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if size is not None and os.path.getsize(file) != size:
            return f"{name} has {os.path.getsize(file)} bytes instead of {size}"
    return None


def any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` is true on at least one process (a collective: every process must call it)."""
    value = torch.tensor(float(flag), device=accelerator.device)
    return bool(accelerator.reduce(value, "max") > 0)


# -- saving -----------------------------------------------------------------------------------------------------------


def save_checkpoint(accelerator, output_dir: str, state: dict, total_limit: int | None = None) -> str:
    """Save the accelerator's state and `state` (which holds `global_step`) as `checkpoint-<global_step>`.

    The files go to `.checkpoint-<step>.partial`, renamed into place when complete; then, with `total_limit`, the
    oldest complete checkpoints are deleted so that at most `total_limit` remain. A failed save raises
    [`CheckpointError`] and leaves the earlier checkpoints as they were.
    """
    path = os.path.join(output_dir, f"checkpoint-{state['global_step']}")
    if accelerator.is_main_process:
        _tidy(output_dir)
    accelerator.wait_for_everyone()
    _write_partial(accelerator, path, state)
    if accelerator.is_main_process:
        _move_into_place(_transient(path, "partial"), path)
        if total_limit is not None:
            _delete_oldest(output_dir, keep=path, total_limit=total_limit)
    accelerator.wait_for_everyone()
    logger.info(f"Saved checkpoint {path}")
    return path


def _transient(path: str, kind: str) -> str:
    """The hidden folder `.checkpoint-<step>.<kind>` next to `path` (`checkpoint-<step>`)."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{kind}")


def _write_partial(accelerator, path: str, state: dict) -> None:
    """Every process's files, then `trainer_state.json` with the list of them, into the partial folder of `path`."""
    partial = _transient(path, "partial")
    error = _attempt(accelerator.save_state, partial)
    # The collective is also the barrier after which every process's files are in the folder.
    if not any_process(accelerator, error is not None) and accelerator.is_main_process:
        error = _attempt(_write_trainer_state, partial, state)
    if any_process(accelerator, error is not None):
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        reason = f"{type(error).__name__}: {error}" if error else "the save failed on another process"
        raise CheckpointError(
            f"Checkpoint {path} was not written ({reason}); its partial files were removed. "
            f"{_intact(os.path.dirname(path))}"
        ) from error


def _attempt(function, *args) -> Exception | None:
    """Call `function(*args)`; the exception it raised, if any."""
    try:
        function(*args)
    # Whatever failed, the other processes must learn it, or they would wait forever.
    except Exception as error:
        return error
    return None


def _write_trainer_state(folder: str, state: dict) -> None:
    """`trainer_state.json`: `state` and the size of every file already in `folder`, which resuming checks."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            file = os.path.join(root, name)
            files[os.path.relpath(file, folder)] = os.path.getsize(file)
    with open(os.path.join(folder, TRAINER_STATE), "w") as file:
        json.dump({**state, CHECKPOINT_FILES: files}, file, indent=2)


def _intact(output_dir: str) -> str:
    """The sentence of a failed save's error that names the checkpoints a resume can still use."""
    complete = [os.path.basename(f) for f in checkpoint_folders(output_dir) if checkpoint_problem(f) is None]
    if not complete:
        return "There is no earlier complete checkpoint."
    return f"Earlier checkpoints are intact: {', '.join(complete)}."


def _move_into_place(partial: str, path: str) -> None:
    """Rename the complete `partial` folder to `path`.

    Re-saving a step (SIGTERM right after a periodic checkpoint) moves the existing folder aside first and deletes it
    only once the new one is in place; if the process dies between the two renames, [`_tidy`] moves it back.
    """
    previous = _transient(path, "previous") if os.path.exists(path) else None
    if previous:
        os.rename(path, previous)
    os.rename(partial, path)
    if previous:
        shutil.rmtree(previous)


def _delete_oldest(output_dir: str, keep: str, total_limit: int) -> None:
    """Delete the oldest complete checkpoints but `keep` so that `total_limit` remain with it; incomplete ones are
    left alone (resuming names them)."""
    others = [f for f in checkpoint_folders(output_dir) if f != keep and checkpoint_problem(f) is None]
    for old in others[: max(0, len(others) - total_limit + 1)]:
        # Renamed first: a deletion cut short leaves a hidden folder, not an incomplete checkpoint-<step>.
        deleted = _transient(old, "deleted")
        os.rename(old, deleted)
        shutil.rmtree(deleted)


def _tidy(output_dir: str) -> None:
    """Remove what interrupted saves left (main process only); a checkpoint an interrupted re-save had moved aside
    goes back to its name."""
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        match = _TRANSIENT_NAME.fullmatch(name)
        if match is None:
            continue
        folder, path = os.path.join(output_dir, name), os.path.join(output_dir, f"checkpoint-{match[1]}")
        if match[2] == "previous" and not os.path.exists(path):
            os.rename(folder, path)
            logger.warning(
                f"Restored {path}, which an interrupted re-save of step {match[1]} had moved aside."
            )
        else:
            shutil.rmtree(folder)
            logger.warning(f"Removed {folder}, left by an interrupted save.")


# -- resuming ---------------------------------------------------------------------------------------------------------


def resolve_checkpoint(accelerator, output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint to resume from: `"latest"` is the newest complete one of `output_dir` (`None` if there is
    none), any other value a checkpoint folder, which must be complete ([`CheckpointError`] otherwise)."""
    if not resume_from_checkpoint:
        return None
    if accelerator.is_main_process:
        _tidy(output_dir)
    accelerator.wait_for_everyone()
    if resume_from_checkpoint == "latest":
        return _latest(output_dir)
    problem = checkpoint_problem(resume_from_checkpoint)
    if problem is not None:
        raise CheckpointError(
            f"Cannot resume from {resume_from_checkpoint}: {problem}. Name a complete checkpoint, or pass "
            "`--resume_from_checkpoint latest` for the newest complete one of the output folder."
        )
    return resume_from_checkpoint


def _latest(output_dir: str) -> str | None:
    """The newest complete checkpoint of `output_dir`; warns about the newer incomplete ones it passes over."""
    skipped, found = [], None
    for folder in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(folder)
        if problem is None:
            found = folder
            break
        skipped.append(f"{folder} ({problem})")
    if skipped:
        logger.warning(f"Skipped incomplete checkpoints: {'; '.join(skipped)}.")
    if found is None:
        logger.info(f"No complete checkpoint in {output_dir}: starting from scratch.")
    return found


def load_checkpoint(accelerator, path: str) -> dict:
    """Restore the accelerator's state from `path`; returns the loop's saved `trainer_state.json`."""
    _check_random_states(accelerator, path)
    accelerator.load_state(path)
    with open(os.path.join(path, TRAINER_STATE)) as file:
        state = json.load(file)
    state.pop(CHECKPOINT_FILES, None)
    logger.info(f"Resumed from {path} at step {state['global_step']}")
    return state


def _check_random_states(accelerator, path: str) -> None:
    """Accelerate's `load_state` skips a random-state file it cannot read with an INFO line, and the resumed run
    then silently differs from an uninterrupted one: fail instead."""
    file = os.path.join(path, f"random_states_{accelerator.process_index}.pkl")
    try:
        load(file, weights_only=True)
    except Exception as error:  # missing, truncated, not a pickle: the resume would not be exact all the same
        raise CheckpointError(
            f"Cannot resume exactly from {path}: {file}, the random states of process {accelerator.process_index}, "
            f"cannot be read ({type(error).__name__}: {_first_line(error)}). Resuming would not continue the run "
            "exactly; resume from another checkpoint."
        ) from error


def _first_line(error: Exception) -> str:
    """The first line of an error's message (torch's unpickling errors run to a page; the cause keeps it all)."""
    return next(iter(str(error).splitlines()), "")


# -- stopping ---------------------------------------------------------------------------------------------------------


class StopSignal:
    """While active (`with StopSignal() as stop:`), SIGTERM (preemption, `scancel`, `kill`) is a request to
    checkpoint and stop after the current step.

    Every process must agree to stop at the same step: [`should_stop`] asks whether any process got the signal.
    """

    EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM

    def __init__(self):
        self.requested = False
        self._previous = signal.SIG_DFL

    def __enter__(self) -> "StopSignal":
        self._previous = signal.signal(signal.SIGTERM, self._request)
        return self

    def __exit__(self, *exc_info) -> None:
        # `None` when the previous handler was not installed from Python.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)

    def _request(self, *_) -> None:
        self.requested = True

    def should_stop(self, accelerator) -> bool:
        return any_process(accelerator, self.requested)

    def checkpoint_and_stop(self, accelerator, output_dir: str, state: dict, total_limit: int | None) -> int:
        """Save a checkpoint of `state`, end the run's trackers; returns [`EXIT_CODE`] for the script to exit with."""
        path = save_checkpoint(accelerator, output_dir, state, total_limit)
        logger.warning(
            f"SIGTERM: checkpoint saved to {path}; continue with --resume_from_checkpoint latest. "
            f"Exiting with code {self.EXIT_CODE}."
        )
        accelerator.end_training()
        return self.EXIT_CODE


def ignore_sigterm(worker_id: int) -> None:
    """`worker_init_fn` of the DataLoaders: a SIGTERM sent to the whole process group (Slurm, `timeout`, systemd)
    must reach only the trainer, which finishes its step, checkpoints and then shuts its workers down. A worker ended
    by it makes the trainer fail instead ("DataLoader worker ... is killed by signal: Terminated").

    Workers still end with the trainer: PyTorch stops them when their loader is done, and they exit on their own when
    the trainer dies.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_launcher() -> None:
    """Under `accelerate launch` on Linux, have the kernel send this process SIGTERM when the launcher exits.

    Accelerate's single-process launcher runs the script with `subprocess.Popen(command).wait()` and forwards no
    signal: a SIGTERM to the launcher (`kill` of the PID a scheduler or a shell started, an init such as `tini`
    forwarding a container's SIGTERM) ends the launcher alone, and the trainer trains on, orphaned. With
    PR_SET_PDEATHSIG the launcher's death becomes a SIGTERM for the trainer, which checkpoints and exits 143
    ([`StopSignal`]); called before the set-up, so that a launcher dying then ends the trainer too. Other parents are
    left out: a shell or `nohup` that exits must not stop a training run. (Multi-process launches run through
    torchrun, which forwards SIGTERM to its workers itself and kills them 30 s later.)
    """
    launcher = os.getppid()
    if not is_accelerate_launch(_command_line(launcher)) or not _set_parent_death_signal(signal.SIGTERM):
        return
    if os.getppid() != launcher:  # the launcher exited before the kernel knew to signal its death
        os.kill(os.getpid(), signal.SIGTERM)


def is_accelerate_launch(argv: list[str]) -> bool:
    """Whether a command line is `accelerate launch ...` (`accelerate-launch`, `python -m accelerate.commands.launch`)."""
    names = [os.path.basename(arg) for arg in argv]
    return (
        "accelerate-launch" in names
        or "accelerate.commands.launch" in argv
        or any(a == "accelerate" and b == "launch" for a, b in zip(names, names[1:], strict=False))
    )


def _command_line(pid: int) -> list[str]:
    """The arguments of process `pid` (empty where /proc cannot tell: not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _set_parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum); whether it took effect."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library with prctl
        return False


__all__ = [
    "CheckpointError",
    "StopSignal",
    "any_process",
    "checkpoint_folders",
    "checkpoint_problem",
    "ignore_sigterm",
    "is_accelerate_launch",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "stop_with_launcher",
]
