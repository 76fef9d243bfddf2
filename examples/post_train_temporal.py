#!/usr/bin/env python
"""TeminAL-style temporal post-training of a trained MGA-CLAP (or transformers CLAP) model, with Accelerate
(`transformers_mgaclap.training.teminal`).

    accelerate launch examples/post_train_temporal.py --model_name_or_path outputs/mgaclap-pretrain
    accelerate launch examples/post_train_temporal.py --model_name_or_path <folder> \\
        --dataset_name ashraq/esc50 --label_column category --segment_seconds 5

Stage A teaches one sound from several ("a and b" against the single sounds), stage B teaches order ("a before b"
against the swapped order and the overlay). Data: any labelled clip dataset with an audio and a label column (ESC-50
style: a Hub id, a `save_to_disk` folder or an audiofolder); without `--dataset_name`, synthetic single-event clips of
the package's 16 sound classes. `--resume_from_checkpoint latest` continues exactly; SIGTERM saves a checkpoint first
and exits with code 143. The output folder loads with `AutoModel.from_pretrained(folder, trust_remote_code=True)`.
"""

import sys

from transformers_mgaclap.utils.cli import DataclassArgumentParser, require_extra_or_exit


def main(argv: list[str] | None = None) -> int:
    require_extra_or_exit("train", ("accelerate", "datasets"), "examples/post_train_temporal.py")
    # Imported after the check: the training loop imports accelerate at module level.
    from transformers_mgaclap.training.teminal import TemporalPostTrainingArguments, post_train_temporal

    (args,) = DataclassArgumentParser(TemporalPostTrainingArguments).parse_args_into_dataclasses(argv)
    return post_train_temporal(args)


if __name__ == "__main__":
    sys.exit(main())
