"""CPU benchmark of embedding 60 s clips: LAION feature fusion vs the windowed average vs one 10 s clip.

Issue requirement: "embedding throughput for 60 s clips with fusion vs the windowed-average baseline (10 s windows,
mean of embeddings): report both clips/s and the memory; fusion should cost <= 1.5x a single 10 s clip".

What is measured. Each mode runs in a fresh subprocess (the parent never imports torch, so the child's peak RSS is its
own), on CPU with `torch.set_num_threads(--threads)`, with the paper's geometry (`MGAClapConfig()`: HTS-AT + bert-base
+ 4096-word codebook; random weights, float32, eval, `torch.no_grad`) and the feature extractor (float32 STFT as
shipped, or `--precision float64`):

- `fusion`: 60 s clips through `MGAClapFeatureExtractor(enable_fusion=True)` and the fused model (global view + 3
  local crops, one HTS-AT pass per clip);
- `windowed`: each 60 s clip cut into 6 consecutive 10 s windows, embedded by the unfused model, the 6 normalised
  embeddings averaged and re-normalised (the baseline);
- `single`: one 10 s clip per item through the unfused model (the reference cost).

Timed end to end from waveforms to normalised clip embeddings (feature extraction included, and reported apart),
`--batch_size` clips per call, after one warm-up batch. Memory: the peak RSS during the timed loop (VmHWM after
resetting it, Linux) and its growth over the RSS before the loop (model loaded, clips in memory).

Run:  python benchmarks/benchmark_fusion.py            (8 clips per mode, batch 4)
      python benchmarks/benchmark_fusion.py --quick    (2 clips per mode, batch 2)
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from harness import (  # benchmarks/harness.py (scripts run from their folder)
    HelpFormatter,
    fill_defaults,
    reset_peak_rss,
    status_kib,
)

SAMPLING_RATE = 32000
CLIP_SECONDS = 60.0
WINDOW_SECONDS = 10.0
TARGET_RATIO = 1.5
MODES = ("single", "fusion", "windowed")


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from transformers_mgaclap import MGAClapConfig, MGAClapFeatureExtractor, MGAClapModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fusion = args.mode == "fusion"
    model = MGAClapModel(MGAClapConfig(enable_fusion=fusion)).eval()
    extractor = MGAClapFeatureExtractor(enable_fusion=fusion, precision=args.precision)
    seconds = WINDOW_SECONDS if args.mode == "single" else CLIP_SECONDS
    rng = np.random.default_rng(0)
    clips = [
        (0.1 * rng.standard_normal(int(seconds * SAMPLING_RATE))).astype(np.float32)
        for _ in range(args.clips)
    ]
    window = int(WINDOW_SECONDS * SAMPLING_RATE)

    def embed(batch: list) -> tuple[torch.Tensor, float]:
        """Normalised clip embeddings `(len(batch), D)` and the seconds spent in the feature extractor."""
        start = time.perf_counter()
        if args.mode == "windowed":
            windows = [clip[i : i + window] for clip in batch for i in range(0, len(clip), window)]
            inputs = extractor(windows, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        else:
            inputs = extractor(batch, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        extraction = time.perf_counter() - start
        embeds = model.get_audio_features(**inputs).pooler_output
        if args.mode == "windowed":  # the mean of each clip's window embeddings, re-normalised
            embeds = F.normalize(embeds.view(len(batch), -1, embeds.shape[-1]).mean(dim=1), dim=-1)
        return embeds, extraction

    batches = [clips[i : i + args.batch_size] for i in range(0, len(clips), args.batch_size)]
    with torch.no_grad():
        embed(batches[0])  # warm-up
        rss_before = status_kib("VmRSS")
        reset = reset_peak_rss()
        start = time.perf_counter()
        extraction = 0.0
        for batch in batches:
            embeds, seconds_in_extractor = embed(batch)
            extraction += seconds_in_extractor
        elapsed = time.perf_counter() - start
    assert torch.isfinite(embeds).all()
    peak = status_kib("VmHWM")
    print(
        json.dumps(
            {
                "mode": args.mode,
                "clips": args.clips,
                "clip_seconds": WINDOW_SECONDS if args.mode == "single" else CLIP_SECONDS,
                "seconds": elapsed,
                "clips_per_second": args.clips / elapsed,
                "extraction_seconds": extraction,
                "rss_before_mib": rss_before / 1024,
                "peak_rss_mib": peak / 1024,
                "growth_mib": (peak - rss_before) / 1024,
                "peak_reset": reset,
            }
        )
    )


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--mode", mode, "--clips", str(args.clips),
               "--batch_size", str(args.batch_size), "--threads", str(args.threads),
               "--precision", args.precision]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 clips per mode, batch 2 (smoke test)")
    parser.add_argument("--clips", type=int, default=None, help="clips per mode (default 8, 2 with --quick)")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="clips per call (default 4, 2 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each worker")
    parser.add_argument(
        "--precision",
        choices=["float64", "float32"],
        default="float32",
        help="the extractor's STFT precision in every mode (float32 is the shipped default)",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="the modes to measure")
    parser.add_argument("--output", default=None, help="also write the results as JSON here (default: none)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    return fill_defaults(parser.parse_args(), {"clips": (8, 2), "batch_size": (4, 2)})


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"{args.clips} clips per mode, batch {args.batch_size}, {args.precision} STFT")  # fmt: skip
    results = {mode: run_mode(mode, args) for mode in args.modes}
    for mode, r in results.items():
        print(
            f"{mode:9s} {r['clip_seconds']:4.0f} s clips: {r['clips_per_second']:.3f} clips/s "
            f"({r['seconds']:.1f} s, extraction {r['extraction_seconds']:.1f} s), peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"growth {r['growth_mib']:.0f} MiB"
        )
    if "single" in results:
        for mode in ("fusion", "windowed"):
            if mode in results:
                ratio = results["single"]["clips_per_second"] / results[mode]["clips_per_second"]
                verdict = f" (target <= {TARGET_RATIO})" if mode == "fusion" else ""
                print(f"{mode} cost per 60 s clip / one 10 s clip: {ratio:.2f}x{verdict}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
