"""CPU benchmark of zero-shot sound event detection on long recordings.

Issue requirement: "zero-shot SED throughput on CPU (seconds of audio per second) and peak memory for 1 min vs
30 min of audio; memory ratio target <= 1.2".

What is measured. For every recording length, a fresh subprocess (the parent never imports torch, so the child's
`ru_maxrss` is its own) does, on CPU with `torch.set_num_threads(--threads)`:

1. builds `MGAClapModel(MGAClapConfig())` (the paper's geometry: HTS-AT + bert-base + 4096-word codebook; random
   weights, float32, eval) and the default `MGAClapFeatureExtractor` (float64 STFT, as shipped);
2. synthesises the recording into a float WAV file, 10 s at a time (32 kHz: low noise with 1 kHz tone bursts), and
   with `--input array` (the old way) loads it whole into memory;
3. resets the peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0) and times
   `compute_long_audio_frame_similarity` (10 s windows every `--hop` s, `--batch_size` windows per call, the queries
   embedded once) + `post_process_sound_event_detection` for `--labels` queries: the whole of
   `detect_sound_events` except tokenisation (the queries are fixed random word-piece ids, so no tokenizer is needed).

Reported per length: wall time, throughput (seconds of audio per second), windows, events, the RSS before the run
(model loaded, plus the recording with `--input array`), the peak RSS during it (VmHWM; `ru_maxrss` alongside) and
the growth over the RSS before the run. The ratio long / short of the peak is compared with the target 1.2. With the
default `--input file` detection reads the file window by window, so nothing of size O(length) but the similarity
curves (30 min x 10 queries: 0.2 MiB) is ever in memory; with `--input array` the recording itself is (30 min at
32 kHz float32 = 220 MiB), which the "without the input" ratio removes. The peak varies by a few tens of MiB from
run to run with the allocator's reuse of the forward pass's transient buffers.

Run:  python benchmarks/benchmark_sed.py             (1 min vs 30 min, hop 5 s, batch 8)
      python benchmarks/benchmark_sed.py --quick     (smoke test: 0.5 min vs 2 min)
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from harness import (  # benchmarks/harness.py (scripts run from their folder)
    HelpFormatter,
    fill_defaults,
    reset_peak_rss,
    status_kib,
)

SAMPLING_RATE = 32000
TARGET_RATIO = 1.2


def synthesise(minutes: float, path: str) -> int:
    """Write `minutes` of 32 kHz audio to a float WAV at `path`, 10 s at a time: noise at -46 dBFS and a 2 s, 1 kHz
    tone every 15 s. Returns the number of samples."""
    import numpy as np
    import soundfile

    total = int(round(minutes * 60 * SAMPLING_RATE))
    rng = np.random.default_rng(0)
    chunk = 10 * SAMPLING_RATE
    period, tone_start, tone_length = 15 * SAMPLING_RATE, 5 * SAMPLING_RATE, 2 * SAMPLING_RATE
    with soundfile.SoundFile(path, "w", SAMPLING_RATE, 1, subtype="FLOAT") as out:
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            block = rng.standard_normal(stop - start, dtype=np.float32) * 0.005
            index = np.arange(start, stop)
            in_tone = ((index % period) >= tone_start) & ((index % period) < tone_start + tone_length)
            block[in_tone] += 0.3 * np.sin(2 * np.pi * 1000.0 * index[in_tone] / SAMPLING_RATE)
            out.write(block)
    return total


def worker(args: argparse.Namespace) -> None:
    import torch

    from transformers_mgaclap import MGAClapConfig, MGAClapFeatureExtractor, MGAClapModel
    from transformers_mgaclap.processing_mgaclap import post_process_sound_event_detection
    from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MGAClapModel(MGAClapConfig(spec_augment=False)).eval()
    extractor = MGAClapFeatureExtractor()
    generator = torch.Generator().manual_seed(0)
    lengths = [3 + index % 5 for index in range(args.labels)]  # [CLS] words [SEP] [PAD]...
    input_ids = torch.zeros(args.labels, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, 0], input_ids[row, length - 1] = 101, 102
        input_ids[row, 1 : length - 1] = torch.randint(1000, 20000, (length - 2,), generator=generator)
    text_inputs = {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}
    labels = [f"label {index}" for index in range(args.labels)]
    path = os.path.join(tempfile.mkdtemp(), "recording.wav")
    num_samples = synthesise(args.minutes, path)
    if args.input == "array":
        import soundfile

        waveform, _ = soundfile.read(path, dtype="float32")
        recording_mib = waveform.nbytes / 2**20
    else:
        waveform, recording_mib = path, 0.0  # read window by window

    rss_before = status_kib("VmRSS")
    reset_ok = reset_peak_rss()
    start = time.perf_counter()
    stitched = compute_long_audio_frame_similarity(
        model,
        waveform,
        text_inputs,
        extractor,
        sampling_rate=SAMPLING_RATE,
        hop_seconds=args.hop,
        batch_size=args.batch_size,
        progress=True,  # on the parent's stderr: a 30 min recording takes a minute or more
    )
    threshold = float(stitched.frame_similarity.quantile(0.9))
    events = post_process_sound_event_detection(
        stitched.frame_similarity,
        stitched.frame_boundaries,
        labels,
        threshold=threshold,
        frame_mask=stitched.frame_mask,
    )[0]
    wall = time.perf_counter() - start
    peak = status_kib("VmHWM")
    result = {
        "minutes": args.minutes,
        "audio_seconds": stitched.duration,
        "wall_seconds": wall,
        "audio_seconds_per_second": stitched.duration / wall,
        "windows": stitched.num_windows,
        "grid_frames": int(stitched.frame_similarity.shape[0]),
        "events": len(events),
        "input": args.input,
        "audio_samples": num_samples,
        "waveform_mib": recording_mib,
        "rss_before_mib": rss_before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_reset": reset_ok,
        "growth_mib": (peak - rss_before) / 1024,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    os.remove(path)
    print("RESULT " + json.dumps(result))


def run_length(minutes: float, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--minutes",
        str(minutes),
        "--threads",
        str(args.threads),
        "--hop",
        str(args.hop),
        "--batch_size",
        str(args.batch_size),
        "--labels",
        str(args.labels),
        "--input",
        args.input,
    ]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    # stderr is the parent's: the worker's progress bar and any traceback are shown as they come.
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"worker for {minutes} min failed (its stderr is above):\n{result.stdout}")
    return json.loads(lines[-1][len("RESULT ") :])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="0.5 min vs 2 min (smoke test)")
    parser.add_argument("--short_minutes", type=float, default=None, help="default 1 (0.5 with --quick)")
    parser.add_argument("--long_minutes", type=float, default=None, help="default 30 (2 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each worker")
    parser.add_argument("--hop", type=float, default=5.0, help="seconds between window starts")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per model call")
    parser.add_argument("--labels", type=int, default=10, help="text queries")
    parser.add_argument(
        "--input",
        choices=["file", "array"],
        default="file",
        help="give detection the WAV path (read window by window) or the whole recording as an array",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file (default: none)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, default=None, help=argparse.SUPPRESS)
    return fill_defaults(parser.parse_args(), {"short_minutes": (1.0, 0.5), "long_minutes": (30.0, 2.0)})


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    print(
        f"Zero-shot SED, MGAClapConfig() random weights, CPU, {args.threads} threads, windows of 10 s every "
        f"{args.hop} s, {args.batch_size} windows per call, {args.labels} queries; {platform.platform()}, "
        f"{os.cpu_count()} CPUs visible. One fresh process per length.",
        flush=True,
    )
    results = {}
    print(f"Input: {args.input}", flush=True)
    for minutes in (args.short_minutes, args.long_minutes):
        result = run_length(minutes, args)
        results[minutes] = result
        print(
            f"{minutes:g} min: {result['wall_seconds']:.1f} s wall, {result['audio_seconds_per_second']:.2f} s of audio/s, "
            f"{result['windows']} windows, {result['events']} events; RSS before {result['rss_before_mib']:.0f} MiB "
            f"(recording {result['waveform_mib']:.0f} MiB), peak {result['peak_rss_mib']:.0f} MiB "
            f"(ru_maxrss {result['ru_maxrss_mib']:.0f} MiB), growth during the run {result['growth_mib']:.0f} MiB",
            flush=True,
        )
    short, long = results[args.short_minutes], results[args.long_minutes]
    ratio = long["peak_rss_mib"] / short["peak_rss_mib"]
    growth_ratio = long["growth_mib"] / max(short["growth_mib"], 1e-9)
    # The recording is the caller's input (O(length) by nature); without it, what detection itself holds.
    without_input = (long["peak_rss_mib"] - long["waveform_mib"]) / (
        short["peak_rss_mib"] - short["waveform_mib"]
    )
    print(
        f"Peak RSS ratio {args.long_minutes:g} min / {args.short_minutes:g} min: {ratio:.3f} "
        f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}); "
        f"without the input recording's own bytes: {without_input:.3f}; "
        f"ratio of the growth over the loaded state: {growth_ratio:.3f}"
    )
    if args.json:
        with open(args.json, "w") as handle:
            summary = {
                "peak_ratio": ratio,
                "peak_ratio_without_input": without_input,
                "growth_ratio": growth_ratio,
            }
            json.dump({"results": results, **summary}, handle, indent=2)


if __name__ == "__main__":
    main()
