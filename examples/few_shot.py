#!/usr/bin/env python
"""Episodic N-way K-shot audio recognition with a frozen MGA-CLAP (`transformers_mgaclap.extensions.few_shot`):
zero-shot, Tip-Adapter, Treff adapter and the multi-grained cache (training-free and trained), side by side on the
same episodes.

    python examples/few_shot.py --model_name_or_path outputs/mgaclap-pretrain          # synthetic sound classes
    python examples/few_shot.py --model_name_or_path <folder> --dataset_name ashraq/esc50 \\
        --label_column category --n_way 15 --k_shot 1 5 10 --n_query 30 --episodes 20   # ESC-50 protocol
    python examples/few_shot.py --quick true                                            # smoke run

Protocol: `--num_splits` fixed "novel" class splits of `--n_way` classes (ESC-50: 5 splits of 15 of the 50
classes; the Treff paper's own lists are not published with this package, so split `s` is a permutation drawn from
`(--split_seed, s)`), `--episodes` episodes per split, each with `--k_shot` supports and `--n_query` queries per class
drawn without overlap. Reported: mean accuracy over all episodes and the half-width of its 95 % Student-t interval.
The audio embeddings are computed once: no method changes the model. The multi-grained method and its settings are a
reconstruction; every hyper-parameter is an option (`FewShotConfig`).
"""

import dataclasses
import json
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoProcessor

from transformers_mgaclap.data.labels import class_indices, class_names_of, label_text
from transformers_mgaclap.data.soundscapes import build_labelled_clip_dataset, get_sound_event_class
from transformers_mgaclap.data.sources import load_dataset_source
from transformers_mgaclap.extensions.few_shot import (
    METHODS,
    FewShotConfig,
    default_class_prompts,
    evaluate_few_shot,
    markdown_table,
)
from transformers_mgaclap.utils.cli import DataclassArgumentParser, require_extra_or_exit

QUICK = {
    "synthetic_clips_per_class": 3,
    "synthetic_duration": 1.0,
    "num_splits": 2,
    "n_way": 3,
    "k_shot": [1],
    "n_query": 2,
    "episodes": 2,
    "train_epochs": 2,
    "treff_epochs": 2,
}


@dataclass
class FewShotArguments:
    model_name_or_path: str = field(
        default="outputs/mgaclap-pretrain", metadata={"help": "A saved MGA-CLAP folder."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Labelled clips (Hub id or save_to_disk folder). Default: none, held-out clips of the "
            "package's 16 synthetic sound classes."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Configuration of a Hub dataset. Default: its default one."}
    )
    split: str = field(default="train", metadata={"help": "Split of the dataset."})
    audio_column: str = field(default="audio", metadata={"help": "Audio column."})
    label_column: str = field(default="label", metadata={"help": "Label column (ClassLabel, int or string)."})
    synthetic_clips_per_class: int = field(default=20, metadata={"help": "Synthetic data: clips per class."})
    synthetic_duration: float = field(
        default=5.0, metadata={"help": "Synthetic data: clip length in seconds."}
    )
    prompt_templates: list[str] = field(
        default_factory=lambda: ["{} can be heard"],
        metadata={"help": "Class prompts (MGA-CLAP's ESC-50 prompt)."},
    )
    descriptions_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON {class name: [description, ...]} enriching the class texts (e.g. from an LLM). "
            "Default: none (synthetic classes: their own phrases)."
        },
    )
    no_synthetic_descriptions: bool = field(
        default=False, metadata={"help": "Synthetic classes: do not add their own phrases as descriptions."}
    )
    n_way: int | None = field(
        default=None, metadata={"help": "Classes per episode. Default: 15, or 5 synthetic."}
    )
    k_shot: list[int] = field(
        default_factory=lambda: [1, 5, 10], metadata={"help": "Supports per class (each K)."}
    )
    n_query: int | None = field(
        default=None, metadata={"help": "Queries per class. Default: 30, or 10 on synthetic data."}
    )
    num_splits: int = field(default=5, metadata={"help": "Fixed class splits."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the class splits."})
    episodes: int = field(default=20, metadata={"help": "Episodes per split."})
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": "Methods to compare.", "choices": METHODS}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the episodes (and of the synthetic clips)."})
    batch_size: int = field(default=32, metadata={"help": "Clips per model call."})
    output_file: str | None = field(
        default=None, metadata={"help": "Also write the results as JSON to this file. Default: none."}
    )
    quick: bool = field(default=False, metadata={"help": "A tiny smoke run: " + json.dumps(QUICK)})


def load_labelled_clips(args: FewShotArguments):
    """The labelled clips, the class names, and descriptions per class (synthetic classes: their own phrases)."""
    if args.dataset_name is None:
        # The "test" stream: clips the pre-training never saw.
        dataset = build_labelled_clip_dataset(
            args.synthetic_clips_per_class,
            seed=args.seed,
            split_name="test",
            duration=args.synthetic_duration,
            progress=True,
        )
        names = class_names_of(dataset, args.label_column)
        descriptions = {}
        if not args.no_synthetic_descriptions:
            descriptions = {name: list(get_sound_event_class(name).phrases) for name in names}
        return dataset, names, descriptions
    dataset = load_dataset_source(args.dataset_name, args.split, args.dataset_config_name)
    return (
        dataset,
        class_indices(list(dataset[args.label_column]), class_names_of(dataset, args.label_column))[1],
        {},
    )


def main(argv: list[str] | None = None) -> int:
    require_extra_or_exit("train", ("datasets", "scipy"), "examples/few_shot.py")
    parser = DataclassArgumentParser((FewShotArguments, FewShotConfig))
    args, config = parser.parse_args_into_dataclasses(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(config if hasattr(config, name) else args, name, value)
    synthetic = args.dataset_name is None
    args.n_way = args.n_way or (5 if synthetic else 15)
    args.n_query = args.n_query or (10 if synthetic else 30)
    torch.manual_seed(args.seed)

    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    dataset, names, descriptions = load_labelled_clips(args)
    if args.descriptions_file:
        with open(args.descriptions_file) as file:
            descriptions = json.load(file)
    enrich = {label_text(name): texts for name, texts in descriptions.items()}
    prompts = default_class_prompts([label_text(name) for name in names], args.prompt_templates, enrich)
    rows = evaluate_few_shot(
        model,
        processor,
        dataset,
        prompts,
        k_shots=args.k_shot,
        n_way=args.n_way,
        n_query=args.n_query,
        num_splits=args.num_splits,
        split_seed=args.split_seed,
        episodes_per_split=args.episodes,
        methods=args.methods,
        config=config,
        seed=args.seed,
        audio_column=args.audio_column,
        label_column=args.label_column,
        batch_size=args.batch_size,
        progress=True,
    )
    print(f"\n{args.n_way}-way, {args.n_query} queries per class, mean accuracy (%) ± 95 % interval\n")
    print(markdown_table(rows))
    if args.output_file:
        with open(args.output_file, "w") as file:
            json.dump(
                {"args": vars(args), "config": dataclasses.asdict(config), "results": rows}, file, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
