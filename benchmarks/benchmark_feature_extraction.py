"""Throughput of `MGAClapFeatureExtractor` against transformers' `ClapFeatureExtractor` on the same mel settings.

Times a batch of 10 s clips at 32 kHz (batch 32 by default) on 2 torch threads, in one process: one warm-up round,
then `--repeats` rounds that call every extractor once; the median (and minimum) is reported. Other processes on
the machine slow the 2-thread torch path more than single-threaded numpy, so compare figures from an idle machine
(or with `--threads 1`, which contention distorts far less).
`ClapFeatureExtractor` is configured like the MGA-CLAP front end (64 Slaney mel bands, 50-14 000 Hz, window 1024,
hop 320) with `rand_trunc`, so it computes one spectrogram per clip.

`--signal noise` (white noise, like most recorded audio: broadband) is the float32 STFT's usual case: every frame stays
in float32. `--signal tone` (a pure 440 Hz tone) is its slowest: every frame leaves bands more than 70 dB below its
energy, so every frame is also recomputed in float64.

    python benchmarks/benchmark_feature_extraction.py [--batch_size 32] [--repeats 5] [--threads 2] [--signal noise]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import ClapFeatureExtractor

from transformers_mgaclap import MGAClapFeatureExtractor

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--batch_size", type=int, default=32, help="clips per call")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of every clip")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--signal", choices=("noise", "tone"), default="noise", help="content of every clip")
    return parser.parse_args()


def make_clips(signal: str, batch_size: int, num_samples: int, sampling_rate: int) -> list[np.ndarray]:
    """`batch_size` float32 clips: white noise (a different draw each) or a pure 440 Hz tone (a different phase)."""
    rng = np.random.default_rng(0)
    if signal == "noise":
        return [(0.1 * rng.standard_normal(num_samples)).astype(np.float32) for _ in range(batch_size)]
    t = np.arange(num_samples) / sampling_rate
    return [
        (0.5 * np.sin(2 * np.pi * 440 * t + phase)).astype(np.float32)
        for phase in rng.uniform(0, 6, batch_size)
    ]


def time_calls(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of every call in `calls`, over `repeats` rounds that call each once (after a warm-up round).

    Interleaved rather than one extractor after the other, so that a change of load on a shared machine does not
    favour whichever extractor ran while it was quiet.
    """
    times = {name: [] for name in calls}
    for round_index in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    sampling_rate = 32000
    clips = make_clips(args.signal, args.batch_size, int(args.seconds * sampling_rate), sampling_rate)

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
        "MGAClapFeatureExtractor precision=float32 (default)": MGAClapFeatureExtractor(precision="float32"),
    }
    print(
        f"batch {args.batch_size} x {args.seconds:g} s of {args.signal} at {sampling_rate} Hz, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}, median of {args.repeats} calls"
    )
    calls = {
        name: lambda extractor=extractor: extractor(clips, sampling_rate=sampling_rate, return_tensors="pt")
        for name, extractor in extractors.items()
    }
    throughput = {}
    for name, times in time_calls(calls, args.repeats).items():
        seconds = statistics.median(times)
        throughput[name] = args.batch_size / seconds
        print(
            f"{name:52s} median {seconds * 1e3:7.1f} ms/batch (min {min(times) * 1e3:7.1f}) "
            f"{throughput[name]:7.1f} clips/s"
        )
    baseline = throughput["ClapFeatureExtractor (numpy)"]
    for name, value in throughput.items():
        if name.startswith("MGAClap"):
            print(f"speed-up of {name} (medians): {value / baseline:.1f}x")


if __name__ == "__main__":
    main()
