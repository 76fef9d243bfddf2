#!/usr/bin/env python
"""TeminAL-style temporal post-training of a trained MGA-CLAP (or transformers CLAP) model, with Accelerate.

    accelerate launch examples/post_train_temporal.py --model_name_or_path outputs/mgaclap-pretrain
    accelerate launch examples/post_train_temporal.py --model_name_or_path <folder> \\
        --dataset_name ashraq/esc50 --label_column category --segment_seconds 5

Stage A (`--stage_a_steps`) teaches one sound from several: each pair of labelled clips of different classes gives
"a and b" (the clips concatenated or overlaid) and the two single-sound clips, each the other's hard negative.
Stage B (`--stage_b_steps`) teaches order: "a before b" (or "b after a"), the swapped order and the overlay
("a while b"), the swapped and overlaid versions being explicit hard negatives of every caption
(`transformers_mgaclap.temporal`). TeminAL (arXiv 2408.09269) publishes neither code nor templates: this is a
reconstruction, every choice a flag.

Data: any labelled clip dataset with an audio and a label column (ESC-50 style: a Hub id, a `save_to_disk` folder
or an audiofolder); without `--dataset_name`, synthetic single-event clips of the package's 16 sound classes. A
batch is a function of `(seed, step, process)`, so `--resume_from_checkpoint latest` continues exactly. The loss
is computed on each process's local batch (its groups hold all their hard negatives). The output folder loads with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import AutoModel, AutoProcessor, get_scheduler

import transformers_mgaclap  # noqa: F401 - registers MGA-CLAP with the Auto classes
from transformers_mgaclap.temporal import (
    build_labelled_clip_dataset,
    class_indices,
    evaluate_temporal,
    label_names_of,
    label_text,
    load_waveforms,
    sample_pair_clips,
    split_class_pairs,
    stage_a_group,
    stage_b_group,
    temporal_batch_loss,
)

logger = get_logger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model_name_or_path",
        default="outputs/mgaclap-pretrain",
        help="A saved MGA-CLAP or CLAP folder or repo (model + processor).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", default=None, help="Labelled clips; none = synthetic sound classes.")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--audio_column", default="audio")
    data.add_argument("--label_column", default="label", help="A ClassLabel, integer or string column.")
    data.add_argument("--synthetic_clips_per_class", type=int, default=24)
    data.add_argument(
        "--segment_seconds", type=float, default=5.0, help="Slot of each clip; composites last 2 slots + gap."
    )
    data.add_argument(
        "--gap_seconds", type=float, default=0.0, help="Silence between the two clips of a sequence."
    )
    data.add_argument(
        "--heldout_pair_fraction",
        type=float,
        default=0.0,
        help="Fraction of class pairs never composed in training (for ZSTE on unseen pairs).",
    )
    data.add_argument("--pair_seed", type=int, default=0, help="Seed of the held-out pair split.")
    data.add_argument(
        "--overlay_probability", type=float, default=0.5, help="Stage A: 'a and b' as an overlay."
    )
    data.add_argument(
        "--after_probability", type=float, default=0.5, help="Stage B: word an order with 'after'."
    )
    data.add_argument(
        "--templates", default=None, help="JSON overriding caption templates, e.g. '{\"before\": ...}'."
    )

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", default="outputs/mgaclap-teminal")
    train.add_argument("--stage_a_steps", type=int, default=40)
    train.add_argument("--stage_b_steps", type=int, default=60)
    train.add_argument(
        "--pairs_per_batch", type=int, default=8, help="Pairs per process and step (3 clips each)."
    )
    train.add_argument("--learning_rate", type=float, default=2e-5)
    train.add_argument("--weight_decay", type=float, default=0.0)
    train.add_argument("--lr_scheduler_type", default="constant_with_warmup")
    train.add_argument("--num_warmup_steps", type=int, default=5)
    train.add_argument(
        "--hard_negative_weight", type=float, default=1.0, help="Weight w of the explicit negatives."
    )
    train.add_argument(
        "--freeze_batch_norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep BatchNorm running statistics (the mel normalisation) fixed: composites with silent halves would "
        "otherwise shift the statistics that every input, not only composites, is normalised with.",
    )
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpointing_steps", type=int, default=None)
    train.add_argument("--checkpoints_total_limit", type=int, default=None)
    train.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    train.add_argument("--logging_steps", type=int, default=10)
    train.add_argument(
        "--eval_pairs", type=int, default=0, help="ZSTE pairs evaluated at the end (0 = none)."
    )
    args = parser.parse_args(argv)
    if args.stage_a_steps < 0 or args.stage_b_steps < 0:
        parser.error("Stage step counts must be >= 0.")
    return args


def load_labelled_clips(args):
    """The labelled clip dataset (audio + label)."""
    if args.dataset_name is None:
        return build_labelled_clip_dataset(args.synthetic_clips_per_class, seed=args.seed)
    import datasets

    if os.path.isdir(args.dataset_name) and os.path.exists(
        os.path.join(args.dataset_name, "dataset_info.json")
    ):
        return datasets.load_from_disk(args.dataset_name)
    return datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=args.train_split)


def checkpoint_folders(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folders of `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if re.fullmatch(r"checkpoint-\d+", n)]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n.split("-")[1]))]


def save_checkpoint(accelerator, args, step: int, train_log: list) -> None:
    if accelerator.is_main_process and args.checkpoints_total_limit is not None:
        existing = checkpoint_folders(args.output_dir)
        for old in existing[: max(0, len(existing) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(old)
    path = os.path.join(args.output_dir, f"checkpoint-{step}")
    accelerator.save_state(path)
    if accelerator.is_main_process:
        with open(os.path.join(path, "trainer_state.json"), "w") as file:
            json.dump({"global_step": step, "train_log": train_log}, file)
    accelerator.wait_for_everyone()


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)

    # 1. Accelerator.
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        project_config=ProjectConfiguration(project_dir=args.output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)

    # 2. Model, processor and the labelled clips, decoded once at the model's sampling rate.
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    with accelerator.main_process_first():
        dataset = load_labelled_clips(args)
    names = label_names_of(dataset, args.label_column)
    raw_labels = list(dataset[args.label_column])
    labels, num_classes = class_indices(raw_labels)
    waveforms = load_waveforms(dataset, processor.feature_extractor.sampling_rate, args.audio_column)
    label_texts = [label_text(label, names) for label in raw_labels]
    train_pairs, heldout_pairs = split_class_pairs(num_classes, args.heldout_pair_fraction, args.pair_seed)
    templates = json.loads(args.templates) if args.templates else None
    sampling_rate = processor.feature_extractor.sampling_rate
    layout = dict(
        segment_samples=int(round(args.segment_seconds * sampling_rate)),
        gap_samples=int(round(args.gap_seconds * sampling_rate)),
        templates=templates,
    )

    def batch_for(step: int) -> list:
        """Composite examples of `step` (stage A before `--stage_a_steps`, stage B after): `(seed, step, rank)` only."""
        rng = np.random.default_rng([args.seed, step, accelerator.process_index])
        examples = []
        for first, second in sample_pair_clips(labels, train_pairs, args.pairs_per_batch, rng):
            clips = (waveforms[first], label_texts[first], waveforms[second], label_texts[second])
            if step < args.stage_a_steps:
                examples += stage_a_group(*clips, rng, overlay_probability=args.overlay_probability, **layout)
            else:
                examples += stage_b_group(*clips, rng, after_probability=args.after_probability, **layout)
        return examples

    # 3. Optimizer and schedule over both stages.
    total_steps = args.stage_a_steps + args.stage_b_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=max(1, total_steps) * accelerator.num_processes,
    )
    # The model is not wrapped in DDP: the loss embeds through `get_*_features`, which DDP would not see, so the
    # gradients are averaged over processes by hand after `backward` instead.
    model = model.to(accelerator.device)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    accelerator.register_for_checkpointing(model)

    # 4. Resume: batches depend only on the step, so restoring the state is enough.
    step, train_log = 0, []
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            folders = checkpoint_folders(args.output_dir)
            path = folders[-1] if folders else None
        if path is not None:
            accelerator.load_state(path)
            with open(os.path.join(path, "trainer_state.json")) as file:
                state = json.load(file)
            step, train_log = state["global_step"], state["train_log"]
            logger.info(f"Resumed from {path} at step {step}")

    # 5. Train: stage A, then stage B.
    model.train()
    if args.freeze_batch_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    started = time.perf_counter()
    logger.info(
        f"***** TeminAL post-training: {args.stage_a_steps} stage A + {args.stage_b_steps} stage B steps *****"
    )
    while step < total_steps:
        examples = batch_for(step)
        with accelerator.autocast():
            loss = temporal_batch_loss(model, processor, examples, args.hard_negative_weight)
        accelerator.backward(loss)
        if accelerator.num_processes > 1:
            for parameter in model.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= accelerator.num_processes
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        stage = "A" if step <= args.stage_a_steps else "B"
        train_log.append({"step": step, "stage": stage, "loss": loss.item()})
        if step % args.logging_steps == 0 or step == 1:
            rate = step / (time.perf_counter() - started)
            logger.info(
                f"step {step}/{total_steps} stage {stage} loss {loss.item():.4f} ({rate:.2f} steps/s)"
            )
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args, step, train_log)

    # 6. Evaluate on held-out pairs (or all pairs) and save a trust_remote_code folder.
    metrics = {}
    if args.eval_pairs and accelerator.is_main_process:
        metrics = evaluate_temporal(
            model,
            processor,
            dataset,
            num_pairs=args.eval_pairs,
            pairs=heldout_pairs or None,
            seed=args.seed + 1,
            segment_seconds=args.segment_seconds,
            gap_seconds=args.gap_seconds,
            templates=templates,
            audio_column=args.audio_column,
            label_column=args.label_column,
        )
        logger.info(f"ZSTE after post-training: {metrics}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(args.output_dir)
        processor.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "post_training.json"), "w") as file:
            history = {
                "args": vars(args),
                "train_log": train_log,
                "metrics": metrics,
                "heldout_pairs": heldout_pairs,
            }
            json.dump(history, file, indent=2)
    accelerator.end_training()
    finite = all(math.isfinite(entry["loss"]) for entry in train_log)
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
