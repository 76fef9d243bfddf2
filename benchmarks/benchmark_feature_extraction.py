"""Throughput of `MGAClapFeatureExtractor` against transformers' `ClapFeatureExtractor` on the same mel settings.

Times a batch of 10 s random clips at 32 kHz (batch 32 by default) on 2 torch threads, in one process: one warm-up
call, then `--repeats` timed calls per extractor; the median (and minimum) is reported. Other processes on the
machine slow the 2-thread torch path more than single-threaded numpy, so compare figures from an idle machine.
`ClapFeatureExtractor` is configured like the MGA-CLAP front end (64 Slaney mel bands, 50-14 000 Hz, window 1024,
hop 320) with `rand_trunc`, so it computes one spectrogram per clip.

    python benchmarks/benchmark_feature_extraction.py [--batch_size 32] [--repeats 5] [--threads 2]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import ClapFeatureExtractor

from transformers_mgaclap import MGAClapFeatureExtractor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=32, help="clips per call")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of every clip")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    return parser.parse_args()


def time_call(call, repeats: int) -> list[float]:
    """Wall times of `repeats` calls of `call()`, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    sampling_rate = 32000
    rng = np.random.default_rng(0)
    num_samples = int(args.seconds * sampling_rate)
    clips = [(0.1 * rng.standard_normal(num_samples)).astype(np.float32) for _ in range(args.batch_size)]

    clap = ClapFeatureExtractor(
        feature_size=64,
        sampling_rate=sampling_rate,
        hop_length=320,
        fft_window_size=1024,
        frequency_min=50,
        frequency_max=14000,
        truncation="rand_trunc",
        padding="repeatpad",
    )
    extractors = {
        "ClapFeatureExtractor (numpy)": clap,
        "MGAClapFeatureExtractor precision=float64": MGAClapFeatureExtractor(precision="float64"),
        "MGAClapFeatureExtractor precision=float32": MGAClapFeatureExtractor(precision="float32"),
    }
    print(
        f"batch {args.batch_size} x {args.seconds:g} s at {sampling_rate} Hz, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, median of {args.repeats} calls"
    )
    calls = {
        name: lambda extractor=extractor: extractor(clips, sampling_rate=sampling_rate, return_tensors="pt")
        for name, extractor in extractors.items()
    }
    throughput = {}
    for name, call in calls.items():
        times = time_call(call, args.repeats)
        seconds = statistics.median(times)
        throughput[name] = args.batch_size / seconds
        print(
            f"{name:42s} median {seconds * 1e3:7.1f} ms/batch (min {min(times) * 1e3:7.1f}) "
            f"{throughput[name]:7.1f} clips/s"
        )
    baseline = throughput["ClapFeatureExtractor (numpy)"]
    for name, value in throughput.items():
        if name.startswith("MGAClap"):
            print(f"speed-up of {name} (medians): {value / baseline:.1f}x")


if __name__ == "__main__":
    main()
