#!/usr/bin/env python
"""Keyword-to-caption augmentation (LAION-CLAP, arXiv 2211.06687 §3.2) of an audio dataset with tag / label lists.

    python examples/keyword_to_caption.py --dataset_name <save_to_disk folder or Hub id> \\
        --keyword_column labels --caption_column caption --duration_column duration \\
        --k2c_model_name_or_path gagan3012/k2t --output_dir data/with_k2c

Every row gets `caption_aug` (a caption generated from its keywords, gender-neutralised; or, for clips under 2 s and
rows without keywords, its original caption) and `is_augmented`. Without `--k2c_model_name_or_path` (or with
`--template_fallback` when the model cannot be loaded, e.g. offline) the captions come from the template
"The sound of {a}, {b} and {c}.". The result is written with `save_to_disk`; train on it with
`examples/pretrain.py --dataset_name <output_dir> --text_augment_selection all` (or `augment_only`).
"""

import argparse
import logging

from transformers_mgaclap.audio_input import open_audio
from transformers_mgaclap.data.keyword_to_caption import DEFAULT_TEMPLATE, MIN_DURATION_S, augment_dataset
from transformers_mgaclap.data.sources import load_dataset_source
from transformers_mgaclap.utils.cli import HelpFormatter, require_extra_or_exit

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset_name", required=True, help="A save_to_disk folder or a Hub dataset id.")
    parser.add_argument(
        "--dataset_config_name",
        default=None,
        help="Configuration of a Hub dataset. Default: its default one.",
    )
    parser.add_argument("--split", default="train", help="Split of a Hub dataset or a DatasetDict folder.")
    parser.add_argument(
        "--keyword_column", required=True, help="A list-of-strings (or string) column of tags."
    )
    parser.add_argument(
        "--caption_column",
        default=None,
        help="Original captions, kept for skipped rows. Default: none (skipped rows get the template caption).",
    )
    parser.add_argument(
        "--duration_column",
        default=None,
        help="Clip durations in seconds. Default: none (see --audio_column and --min_duration_s).",
    )
    parser.add_argument(
        "--audio_column",
        default=None,
        help="Without --duration_column: read each clip's duration from this audio column's file header. "
        "Default: none.",
    )
    parser.add_argument(
        "--min_duration_s",
        type=float,
        default=MIN_DURATION_S,
        help="Clips shorter than this keep their original caption (LAION-CLAP: 2 s; 0 augments every clip).",
    )
    parser.add_argument(
        "--k2c_model_name_or_path",
        default=None,
        help="A seq2seq keyword-to-caption model (paper: gagan3012/k2t). Default: none, template captions.",
    )
    parser.add_argument(
        "--template_fallback",
        action="store_true",
        help="Write template captions if the model cannot be loaded instead of failing.",
    )
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="The caption template without a model.")
    parser.add_argument("--batch_size", type=int, default=32, help="Rows per generation call.")
    parser.add_argument("--num_beams", type=int, default=4, help="Beam search width of the generation.")
    parser.add_argument(
        "--max_new_tokens", type=int, default=48, help="Longest generated caption, in tokens."
    )
    parser.add_argument("--device", default="cpu", help="Where the keyword-to-caption model runs.")
    parser.add_argument(
        "--output_dir", required=True, help="Where the augmented dataset is saved (save_to_disk)."
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.duration_column is None and args.audio_column is None and args.min_duration_s > 0:
        parser.error(
            "Pass --duration_column or --audio_column (to skip clips under 2 s), or --min_duration_s 0."
        )
    return args


def load_k2c_model(args):
    """(model, tokenizer), or (None, None) for template captions."""
    if args.k2c_model_name_or_path is None:
        logger.info("No --k2c_model_name_or_path: writing template captions.")
        return None, None
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.k2c_model_name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(args.k2c_model_name_or_path)
    except OSError as error:
        if not args.template_fallback:
            raise
        logger.warning("Cannot load %r (%s): writing template captions.", args.k2c_model_name_or_path, error)
        return None, None
    return model.to(args.device).eval(), tokenizer


def header_duration(audio_column: str):
    """A `duration_fn` reading an undecoded audio cell's duration from its header (the audio input layer)."""

    def duration(row: dict) -> float:
        with open_audio(row[audio_column]) as source:
            return source.duration

    return duration


def main(argv=None) -> int:
    args = parse_args(argv)
    require_extra_or_exit("audio", ("datasets",), "examples/keyword_to_caption.py")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # 1. Data: audio stays undecoded, only headers are read when durations are needed.
    dataset = load_dataset_source(args.dataset_name, args.split, args.dataset_config_name)
    duration_fn = None
    if args.duration_column is None and args.audio_column is not None:
        import datasets

        dataset = dataset.cast_column(args.audio_column, datasets.Audio(decode=False))
        duration_fn = header_duration(args.audio_column)

    # 2. Model (or the template fallback).
    model, tokenizer = load_k2c_model(args)

    # 3. Batched generation with a progress bar, post-processing, and saving.
    augmented = augment_dataset(
        dataset,
        keyword_column=args.keyword_column,
        caption_column=args.caption_column,
        duration_column=args.duration_column,
        duration_fn=duration_fn,
        model=model,
        tokenizer=tokenizer,
        min_duration_s=args.min_duration_s,
        batch_size=args.batch_size,
        template=args.template,
        generation_kwargs={"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens},
    )
    augmented.save_to_disk(args.output_dir)
    count = sum(augmented["is_augmented"])
    logger.info("Wrote %d rows (%d augmented) to %s", len(augmented), count, args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
