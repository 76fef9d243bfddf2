#!/usr/bin/env python
"""TeminAL-style temporal post-training of a trained MGA-CLAP (or transformers CLAP) model, with Accelerate
(`transformers_mgaclap.training.teminal`).

    accelerate launch examples/post_train_temporal.py --model_name_or_path outputs/mgaclap-pretrain
    accelerate launch examples/post_train_temporal.py --model_name_or_path <folder> \\
        --dataset_name ashraq/esc50 --label_column category --segment_seconds 5

Stage A teaches one sound from several ("a and b" against the single sounds), stage B teaches order ("a before b"
against the swapped order and the overlay). Data: any labelled clip dataset with an audio and a label column (ESC-50
style: a Hub id, a `save_to_disk` folder or an audiofolder); without `--dataset_name`, synthetic single-event clips of
the package's 16 sound classes. `--resume_from_checkpoint latest` continues exactly. The output folder loads with
`AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

import sys

from transformers import HfArgumentParser

from transformers_mgaclap.training.teminal import TemporalPostTrainingArguments, post_train_temporal


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(TemporalPostTrainingArguments).parse_args_into_dataclasses(argv)
    return post_train_temporal(args)


if __name__ == "__main__":
    sys.exit(main())
