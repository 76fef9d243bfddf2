"""TeminAL-style temporal post-training of a trained MGA-CLAP (or transformers CLAP) model, with Accelerate.

Stage A (`stage_a_steps`) teaches one sound from several: each pair of labelled clips of different classes gives
"a and b" (the clips concatenated or overlaid) and the two single-sound clips, each the other's hard negative.
Stage B (`stage_b_steps`) teaches order: "a before b" (or "b after a"), the swapped order and the overlay
("a while b"), the swapped and overlaid versions being explicit hard negatives of every caption
([`~extensions.temporal`]). TeminAL (arXiv 2408.09269) publishes neither code nor templates: this is a
reconstruction (docs/reconstructions.md §3), every choice an argument.

That TNCE trains the global embeddings, which pool over time and stay order-blind. `order_loss_weight` > 0 adds an
order term on the frames ([`~extensions.temporal.frame_order_loss`]): on every sequence composite, the two labels
are grounded with the frame-text cosine and a logistic loss asks that the heard order win in the training-free frame
path's order margin ([`~temporal_relations.soft_order_margin`]). At 0 (the default) it is not computed.

A batch is a function of `(seed, step, process)`, so resuming from a checkpoint continues exactly. The loss is
computed on each process's local batch (its groups hold all their hard negatives). SIGTERM checkpoints and stops
with exit code 143, as in pre-training ([`~training.checkpointing`]). `examples/post_train_temporal.py` is the command
line.
"""

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import AutoModel, AutoProcessor, SchedulerType, get_scheduler
from transformers.utils.logging import tqdm

from ..data.labels import class_indices, class_names_of, label_text
from ..data.soundscapes import build_labelled_clip_dataset
from ..data.sources import load_dataset_source, load_waveforms
from ..extensions.temporal import (
    CompositeLayout,
    evaluate_temporal,
    sample_pair_clips,
    split_class_pairs,
    stage_a_group,
    stage_b_group,
    temporal_batch_loss,
)
from .checkpointing import (
    StopSignal,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    stop_with_launcher,
)

logger = get_logger(__name__)


@dataclass
class TemporalPostTrainingArguments:
    """Every option of a TeminAL-style post-training run."""

    model_name_or_path: str = field(
        default="outputs/mgaclap-pretrain",
        metadata={"help": "A saved MGA-CLAP or CLAP folder or Hub repository (model + processor)."},
    )
    # -- data --------------------------------------------------------------------------------------------------------
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Labelled clips (Hub id, save_to_disk folder, audiofolder). Default: none, synthetic "
            "single-event clips of the package's 16 sound classes."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of a Hub dataset. Default: its default one."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of the dataset."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    label_column: str = field(default="label", metadata={"help": "A ClassLabel, integer or string column."})
    synthetic_clips_per_class: int = field(default=24, metadata={"help": "Synthetic data: clips per class."})
    segment_seconds: float = field(
        default=5.0, metadata={"help": "Slot of each clip; composites last two slots plus the gap."}
    )
    gap_seconds: float = field(default=0.0, metadata={"help": "Silence between the two clips of a sequence."})
    heldout_pair_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of class pairs never composed in training (ZSTE on unseen pairs)."},
    )
    pair_seed: int = field(default=0, metadata={"help": "Seed of the held-out pair split."})
    overlay_probability: float = field(default=0.5, metadata={"help": "Stage A: 'a and b' as an overlay."})
    after_probability: float = field(default=0.5, metadata={"help": "Stage B: word an order with 'after'."})
    templates: str | None = field(
        default=None,
        metadata={
            "help": 'JSON overriding caption templates, e.g. \'{"before": "{a}, then {b}"}\'. Default: none, '
            "the templates of transformers_mgaclap.extensions.temporal."
        },
    )
    # -- training ----------------------------------------------------------------------------------------------------
    output_dir: str = field(default="outputs/mgaclap-teminal", metadata={"help": "Where the run writes."})
    stage_a_steps: int = field(default=40, metadata={"help": "Stage A steps (one sound from several)."})
    stage_b_steps: int = field(default=60, metadata={"help": "Stage B steps (order)."})
    pairs_per_batch: int = field(
        default=8, metadata={"help": "Class pairs per process and step (3 clips each)."}
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: SchedulerType = field(
        default="constant_with_warmup",
        metadata={"help": "Learning-rate schedule after the warm-up, one of the choices above."},
    )
    num_warmup_steps: int = field(default=5, metadata={"help": "Warm-up steps."})
    hard_negative_weight: float = field(
        default=1.0, metadata={"help": "Weight w of the explicit hard negatives."}
    )
    order_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the frame-grounded order term added to the TNCE on every sequence composite: a logistic "
            "loss that the heard order wins in the order margin of the two labels' frame-text curves (the "
            "training-free frame path's margin, kept differentiable). 0 (default): not computed, the TNCE alone."
        },
    )
    contrastive_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the TNCE (the contrastive loss on the global embeddings). 0 with --order_loss_weight "
            "> 0 trains the frame-grounded order term alone."
        },
    )
    order_scale_seconds: float = field(
        default=0.5,
        metadata={
            "help": "Order term: the margin (seconds) that gives odds of e : 1 (the frame path's default)."
        },
    )
    freeze_batch_norm: bool = field(
        default=True,
        metadata={
            "help": "Keep BatchNorm running statistics (the mel normalisation) fixed: composites with silent halves "
            "would otherwise shift the statistics every input is normalised with."
        },
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16 (default: Accelerate's configuration).",
            "choices": ("no", "fp16", "bf16"),
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the run."})
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "Checkpoint every N steps. Default: no checkpoints."}
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
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    eval_pairs: int = field(default=0, metadata={"help": "ZSTE pairs evaluated at the end (0 = none)."})

    def __post_init__(self):
        if self.stage_a_steps < 0 or self.stage_b_steps < 0:
            raise ValueError("Stage step counts must be >= 0.")
        if not (self.order_loss_weight >= 0 and math.isfinite(self.order_loss_weight)):
            raise ValueError(
                f"--order_loss_weight must be a finite number >= 0, got {self.order_loss_weight}."
            )
        if not (self.contrastive_loss_weight >= 0 and math.isfinite(self.contrastive_loss_weight)):
            raise ValueError(
                f"--contrastive_loss_weight must be a finite number >= 0, got {self.contrastive_loss_weight}."
            )
        if not (self.order_scale_seconds > 0 and math.isfinite(self.order_scale_seconds)):
            raise ValueError(
                f"--order_scale_seconds must be a finite number > 0, got {self.order_scale_seconds}."
            )


@dataclass
class LabelledClips:
    """The decoded clips, their label texts and class indices, and the class pairs for training and evaluation."""

    dataset: object
    waveforms: list[np.ndarray]
    texts: list[str]
    classes: list[int]
    train_pairs: list[tuple[int, int]]
    heldout_pairs: list[tuple[int, int]]


def load_labelled_clips(
    args: TemporalPostTrainingArguments, sampling_rate: int, progress: bool = False
) -> LabelledClips:
    """The labelled clips (audio + label), decoded once at the model's rate (`progress`: bars in clips, for the
    synthesis and the decoding)."""
    if args.dataset_name is None:
        dataset = build_labelled_clip_dataset(
            args.synthetic_clips_per_class, seed=args.seed, progress=progress
        )
    else:
        dataset = load_dataset_source(args.dataset_name, args.train_split, args.dataset_config_name)
    names = class_names_of(dataset, args.label_column)
    raw_labels = list(dataset[args.label_column])
    classes, class_names = class_indices(raw_labels, names)
    train_pairs, heldout_pairs = split_class_pairs(
        len(class_names), args.heldout_pair_fraction, args.pair_seed
    )
    return LabelledClips(
        dataset=dataset,
        waveforms=load_waveforms(dataset, args.audio_column, sampling_rate, progress=progress),
        texts=[label_text(label, names) for label in raw_labels],
        classes=classes,
        train_pairs=train_pairs,
        heldout_pairs=heldout_pairs,
    )


class TemporalPostTraining:
    """One post-training run: stage A, then stage B, checkpoints, an optional ZSTE evaluation, the saved folder."""

    def __init__(self, args: TemporalPostTrainingArguments):
        stop_with_launcher()
        self.args = args
        os.makedirs(args.output_dir, exist_ok=True)
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            project_config=ProjectConfiguration(project_dir=args.output_dir),
        )
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        set_seed(args.seed)
        self.model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        self.processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
        rate = self.processor.feature_extractor.sampling_rate
        with self.accelerator.main_process_first():
            self.clips = load_labelled_clips(args, rate, progress=self.accelerator.is_local_main_process)
        self.templates = json.loads(args.templates) if args.templates else None
        self.layout = CompositeLayout(
            int(round(args.segment_seconds * rate)), int(round(args.gap_seconds * rate)), self.templates
        )
        self.total_steps = args.stage_a_steps + args.stage_b_steps
        self._prepare_optimization()
        self.step, self.train_log = 0, []

    def _prepare_optimization(self) -> None:
        args, accelerator = self.args, self.accelerator
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay
        )
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
            num_training_steps=max(1, self.total_steps) * accelerator.num_processes,
        )
        # The model is not wrapped in DDP: the loss embeds through `get_*_features`, which DDP would not see, so the
        # gradients are averaged over processes by hand after `backward` instead.
        self.model = self.model.to(accelerator.device)
        self.optimizer, self.scheduler = accelerator.prepare(optimizer, scheduler)
        accelerator.register_for_checkpointing(self.model)

    def batch_for(self, step: int) -> list:
        """Composite examples of `step` (stage A before `stage_a_steps`, stage B after): `(seed, step, rank)` only."""
        args, clips = self.args, self.clips
        rng = np.random.default_rng([args.seed, step, self.accelerator.process_index])
        examples = []
        for first, second in sample_pair_clips(clips.classes, clips.train_pairs, args.pairs_per_batch, rng):
            pair = (clips.waveforms[first], clips.texts[first], clips.waveforms[second], clips.texts[second])
            if step < args.stage_a_steps:
                examples += stage_a_group(pair, rng, self.layout, args.overlay_probability)
            else:
                examples += stage_b_group(pair, rng, self.layout, args.after_probability)
        return examples

    def state(self) -> dict:
        return {"global_step": self.step, "train_log": self.train_log}

    def resume(self) -> None:
        path = resolve_checkpoint(self.accelerator, self.args.output_dir, self.args.resume_from_checkpoint)
        if path is not None:
            state = load_checkpoint(self.accelerator, path)
            self.step, self.train_log = state["global_step"], state["train_log"]

    def train(self) -> int:
        """Both stages; returns 0, or 143 after a SIGTERM (a checkpoint was saved)."""
        with StopSignal() as stop:
            return self._train(stop)

    def _train(self, stop: StopSignal) -> int:
        """[`train`] with SIGTERM turned into `stop`'s request."""
        args = self.args
        self.resume()
        self.model.train()
        if args.freeze_batch_norm:
            for module in self.model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        started = time.perf_counter()
        logger.info(
            f"***** TeminAL post-training: {args.stage_a_steps} stage A + {args.stage_b_steps} stage B steps *****"
        )
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="TeminAL post-training",
            unit="steps",
            disable=not self.accelerator.is_local_main_process,
        )
        with bar:
            while self.step < self.total_steps:
                loss, terms = self._step(self.batch_for(self.step))
                self.step += 1
                stage = "A" if self.step <= args.stage_a_steps else "B"
                entry = {"step": self.step, "stage": stage, "loss": loss.item()}
                # The terms of the loss, unweighted (the order term on batches with a sequence composite).
                if args.order_loss_weight or args.contrastive_loss_weight != 1:
                    entry.update({f"{name}_loss": value for name, value in terms.items()})
                self.train_log.append(entry)
                bar.update()
                bar.set_postfix(stage=stage, loss=f"{loss.item():.4f}")
                if self.step % args.logging_steps == 0 or self.step == 1:
                    rate = self.step / (time.perf_counter() - started)
                    logger.info(
                        f"step {self.step}/{self.total_steps} stage {stage} loss {loss.item():.4f} "
                        f"({rate:.2f} steps/s)"
                    )
                if args.checkpointing_steps and self.step % args.checkpointing_steps == 0:
                    save_checkpoint(
                        self.accelerator, args.output_dir, self.state(), args.checkpoints_total_limit
                    )
                if stop.should_stop(self.accelerator):
                    return stop.checkpoint_and_stop(
                        self.accelerator, args.output_dir, self.state(), args.checkpoints_total_limit
                    )
        return 0

    def _step(self, examples: list) -> tuple[torch.Tensor, dict[str, float]]:
        accelerator, args = self.accelerator, self.args
        with accelerator.autocast():
            loss, terms = temporal_batch_loss(
                self.model,
                self.processor,
                examples,
                args.hard_negative_weight,
                order_loss_weight=args.order_loss_weight,
                order_scale_seconds=args.order_scale_seconds,
                return_terms=True,
                contrastive_loss_weight=args.contrastive_loss_weight,
            )
        accelerator.backward(loss)
        if accelerator.num_processes > 1:
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= accelerator.num_processes
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return loss, terms

    def finish(self) -> int:
        """Evaluate on held-out pairs (or all pairs) and save a `trust_remote_code` folder; 1 if a loss diverged."""
        args, accelerator = self.args, self.accelerator
        metrics = {}
        if args.eval_pairs and accelerator.is_main_process:
            metrics = evaluate_temporal(
                self.model,
                self.processor,
                self.clips.dataset,
                num_pairs=args.eval_pairs,
                pairs=self.clips.heldout_pairs or None,
                seed=args.seed + 1,
                segment_seconds=args.segment_seconds,
                gap_seconds=args.gap_seconds,
                templates=self.templates,
                audio_column=args.audio_column,
                label_column=args.label_column,
                progress=True,
            )
            logger.info(f"ZSTE after post-training: {metrics}")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.model.save_pretrained(args.output_dir)
            self.processor.save_pretrained(args.output_dir)
            history = {
                "args": asdict(args),
                "train_log": self.train_log,
                "metrics": metrics,
                "heldout_pairs": self.clips.heldout_pairs,
            }
            with open(os.path.join(args.output_dir, "post_training.json"), "w") as file:
                json.dump(history, file, indent=2, default=str)
        accelerator.end_training()
        return 0 if all(math.isfinite(entry["loss"]) for entry in self.train_log) else 1


def post_train_temporal(args: TemporalPostTrainingArguments) -> int:
    """Run a TeminAL-style post-training; returns 0, 1 if a loss was not finite, or 143 when stopped by SIGTERM after
    saving a checkpoint."""
    run = TemporalPostTraining(args)
    code = run.train()
    return run.finish() if code == 0 else code


__all__ = ["TemporalPostTrainingArguments", "load_labelled_clips", "post_train_temporal"]
