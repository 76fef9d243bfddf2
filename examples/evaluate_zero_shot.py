#!/usr/bin/env python
"""Zero-shot evaluation of a saved MGA-CLAP model, as the official protocols (`transformers_mgaclap.evaluation`).

    python examples/evaluate_zero_shot.py --model_name_or_path outputs/mgaclap-pretrain --task sed
    python examples/evaluate_zero_shot.py --model_name_or_path <repo> --task classification \\
        --dataset_name ashraq/esc50 --split train --label_column category --fold_column fold

Tasks: retrieval, classification, tagging, sed, grounding, temporal; the columns, prompts and metrics of each are in
`transformers_mgaclap.evaluation.tasks`. Without `--dataset_name` the task runs on a held-out set of the package's
synthetic soundscapes (offline). Writes `results.json` (metric name -> value), `results.md`, `details.json` and, for
SED / grounding, PNG plots of frame-level similarity against the reference events.

SED events and grounding segments are validated before any clip is embedded: an invalid one (offset before onset,
negative or non-finite time, onset past the clip's end, empty label) stops the run with its row, field and rule;
`--skip_invalid_events` leaves such rows out instead and reports how many. Offsets past a clip's end are clipped to it,
and SED labels that differ only by case or whitespace are one class (`transformers_mgaclap.evaluation.validation`).
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from transformers_mgaclap.data.sources import load_dataset_source
from transformers_mgaclap.evaluation.report import markdown_report, write_results
from transformers_mgaclap.evaluation.synthetic import TASKS, synthetic_dataset
from transformers_mgaclap.evaluation.tasks import (
    DEFAULT_COLUMNS,
    DEFAULT_PROMPTS,
    evaluate_task,
    required_modules,
)
from transformers_mgaclap.utils.cli import DataclassArgumentParser, require_extra_or_exit


@dataclass
class EvaluationArguments:
    task: str = field(metadata={"help": f"The task: one of {', '.join(TASKS)}.", "choices": TASKS})
    model_name_or_path: str = field(
        default="outputs/mgaclap-pretrain", metadata={"help": "A saved MGA-CLAP folder or Hub repository."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder (save_to_disk folders too). Default: none, a held-out set of the "
            "package's synthetic soundscapes (--synthetic_clips clips)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of a Hub dataset. Default: its default one."}
    )
    split: str = field(default="test", metadata={"help": "Split of the dataset."})
    max_samples: int | None = field(
        default=None, metadata={"help": "Evaluate the first N examples only. Default: all of them."}
    )
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    caption_column: list[str] | None = field(
        default=None,
        metadata={
            "help": "retrieval: caption columns, each of strings or of lists of strings; with several (Clotho's "
            "caption_1 ... caption_5), a clip's captions are those of all of them. Default: 'captions' if "
            "present, else 'caption'."
        },
    )
    label_column: str = field(default="label", metadata={"help": "classification / temporal: label column."})
    labels_column: str = field(default="labels", metadata={"help": "tagging: list-of-labels column."})
    events_column: str = field(default="events", metadata={"help": "sed: strong-label column."})
    phrase_column: str = field(default="phrase", metadata={"help": "grounding: phrase column."})
    segments_column: str = field(default="segments", metadata={"help": "grounding: segments column."})
    fold_column: str | None = field(
        default=None,
        metadata={
            "help": "classification: report the mean of the per-fold accuracies. Default: none, one accuracy."
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Prompt with one {} for the label or phrase. Default: the official one for the task."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Clips and texts per model call."})
    num_plots: int = field(default=4, metadata={"help": "sed / grounding: PNG plots of the first N rows."})
    num_temporal_pairs: int = field(default=100, metadata={"help": "temporal: class-pair draws."})
    skip_invalid_events: bool = field(
        default=False,
        metadata={
            "help": "sed / grounding: leave out the rows with an invalid reference event or segment (offset before "
            "onset, negative or non-finite time, onset past the clip's end, empty label, overlapping events) and "
            "report how many, instead of stopping at the first one."
        },
    )
    synthetic_clips: int = field(default=200, metadata={"help": "Size of the held-out synthetic set."})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where results go. Default: outputs/eval_<task>, in the working directory."},
    )
    device: str | None = field(default=None, metadata={"help": "Default: cuda if available, else cpu."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = DataclassArgumentParser(EvaluationArguments).parse_args_into_dataclasses(argv)
    # Before the model, the data and the embedding: the metrics are only needed at the end.
    modules = ("datasets", *required_modules(args.task, args.num_plots))
    require_extra_or_exit("eval", modules, f"examples/evaluate_zero_shot.py --task {args.task}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    if args.dataset_name is None:
        dataset, source = (
            synthetic_dataset(args.task, args.synthetic_clips, progress=True),
            "synthetic soundscapes (test stream)",
        )
    else:
        dataset = load_dataset_source(args.dataset_name, args.split, args.dataset_config_name)
        source = f"{args.dataset_name} [{args.split}]"
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    output_dir = Path(args.output_dir or Path("outputs") / f"eval_{args.task}")
    results = evaluate_task(
        model,
        processor,
        dataset,
        args.task,
        columns={name: getattr(args, f"{name}_column") for name in DEFAULT_COLUMNS},
        prompt_template=args.prompt_template,
        fold_column=args.fold_column,
        batch_size=args.batch_size,
        num_plots=args.num_plots,
        plots_dir=output_dir / "plots",
        num_temporal_pairs=args.num_temporal_pairs,
        skip_invalid_events=args.skip_invalid_events,
        progress=True,
    )
    settings = {
        "model": args.model_name_or_path,
        "dataset": source,
        "examples": len(dataset),
        "prompt template": args.prompt_template or DEFAULT_PROMPTS.get(args.task, "the captions / phrases"),
    }
    if "validation" in results["details"]:
        settings["rows skipped (invalid reference events)"] = results["details"]["validation"]["skipped_rows"]
    scalars = write_results(output_dir, args.task, results, settings)
    print(markdown_report(args.task, scalars, settings))
    return scalars


if __name__ == "__main__":
    main()
