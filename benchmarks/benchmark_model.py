"""CPU benchmark of MGAClapModel against transformers' ClapModel with the same HTS-AT and a BERT-size text tower.

Issue requirement: "Training step (forward+backward, batch 8, 10 s audio, 30-token captions, default geometry, CPU):
time ratio MGAClapModel / transformers ClapModel with the same HTS-AT and a BERT-size text tower -> target <= 1.10
(the codebook and loss must be cheap). Peak memory of inference at batch 32 reported."

What is measured (all on CPU, `torch.set_num_threads(--threads)`, random weights, float32):

1. Training step: `model(**inputs, return_loss=True).loss.backward()` in train mode, batch `--batch_size` of
   10 s log-mels (1001 x 64) and 30-token captions (all tokens valid). No optimizer step; gradients are reset to
   None outside the timed region. One warm-up step per model, then `--repeats` steps per model, interleaved (the
   order of the models rotates every round) so that both see the same machine state; the median is reported.
   MGA-CLAP runs with `spec_augment=False` (ClapModel has none) and both HTS-ATs with the same drop-path rate.
2. Inference embedding path: `get_audio_features` at batch `--inference_batch_size` in eval mode under
   `torch.no_grad()`, interleaved the same way; clips/s from the median.
3. Peak memory of inference: a fresh subprocess per model builds the model and the inputs, resets the kernel's
   peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux >= 4.0), runs one `model(**inputs)` (audio and text
   embeddings and logits) under `torch.no_grad()` in eval mode, and reads the peak RSS back (VmHWM of
   /proc/self/status; `getrusage(...).ru_maxrss` is not used because after fork + exec it also holds the parent
   process's peak). Reported: the absolute peak (weights,
   libraries and activations: what the process needs) and the growth over the RSS just before the call (what
   inference adds on top of the loaded model and inputs). The first (cold) call and a second call are reported.

Run:  python benchmarks/benchmark_model.py            (the issue's settings: batch 8, inference batch 32)
      python benchmarks/benchmark_model.py --quick    (smoke test: batch 2, 2 repeats)
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from transformers import ClapModel

from transformers_mgaclap import MGAClapConfig, MGAClapModel

from clap_twin import clap_config  # benchmarks/clap_twin.py (scripts run from their folder)
from harness import HelpFormatter, reset_peak_rss, status_kib  # benchmarks/harness.py

TEXT_LENGTH = 30  # the official caption length, [CLS] and [SEP] included
MEL_FRAMES = 1001  # 10 s at 32 kHz with hop 320
TARGET_RATIO = 1.10


# ---------------------------------------------------------------------------------------------------------------
# Models and inputs
# ---------------------------------------------------------------------------------------------------------------


def mgaclap_config(**overrides) -> MGAClapConfig:
    """The default MGA-CLAP (HTS-AT + bert-base, codebook 4096 x 1024), SpecAugment off unless overridden."""
    return MGAClapConfig(**{"spec_augment": False, **overrides})


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "mgaclap":
        return MGAClapModel(mgaclap_config())
    if name == "clap":
        return ClapModel(clap_config(mgaclap_config()))
    if name == "mgaclap_eager":  # the attention kernel of ClapModel's text tower, which does not support SDPA
        config = mgaclap_config()
        config._attn_implementation = "eager"
        config.text_config._attn_implementation = "eager"
        return MGAClapModel(config)
    if name == "mgaclap_specaugment":
        return MGAClapModel(mgaclap_config(spec_augment=True))
    if name == "mgaclap_mean":  # vanilla CLAP in the MGA-CLAP class: no codebook, no locality-aware block
        return MGAClapModel(mgaclap_config(aggregator="mean", num_locality_aware_blocks=0, loss="clap"))
    raise ValueError(f"unknown model {name!r}")


DESCRIPTIONS = {
    "mgaclap": "MGAClapModel (default, spec_augment=False)",
    "clap": "transformers ClapModel (same HTS-AT, BERT-size text)",
    "mgaclap_eager": "MGAClapModel, eager text attention",
    "mgaclap_specaugment": "MGAClapModel, spec_augment=True",
    "mgaclap_mean": "MGAClapModel, mean pooling, no codebook/LA block, CLAP loss",
}


def make_inputs(name: str, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random 10 s log-mels and 30 valid tokens ([CLS] words [SEP]); identical values for every model."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch_size, MEL_FRAMES, 64, generator=generator) * 10 - 40
    input_ids = torch.randint(1000, 30000, (batch_size, TEXT_LENGTH), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    attention_mask = torch.ones_like(input_ids)
    if name == "clap":  # ClapFeatureExtractor layout (B, 1, T, F); no `is_longer` without fusion
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": features.unsqueeze(1),
        }
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "input_features": features,
        "input_features_mask": torch.ones(batch_size, MEL_FRAMES, dtype=torch.long),
    }


def audio_only(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in inputs.items() if key.startswith("input_features")}


def num_parameters(model: torch.nn.Module) -> float:
    return sum(parameter.numel() for parameter in model.parameters()) / 1e6


# ---------------------------------------------------------------------------------------------------------------
# Timings
# ---------------------------------------------------------------------------------------------------------------


def train_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = model(**inputs, return_loss=True).loss
    loss.backward()
    return time.perf_counter() - start


def audio_embedding_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model.get_audio_features(**inputs)
    return time.perf_counter() - start


def interleaved(names, models, inputs, step, repeats: int) -> dict[str, list[float]]:
    """One warm-up call per model, then `repeats` rounds in a rotating model order."""
    for name in names:
        step(models[name], inputs[name])
    times = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(step(models[name], inputs[name]))
    return times


def load_note(load_before: float, threads: int) -> None:
    """Print the 1-minute load average before and after a timed section: above `threads`, other processes competed."""
    load_after = os.getloadavg()[0]
    busy = max(load_before, load_after) > threads + 0.5
    warning = (
        "  WARNING: other processes competed for the CPU, timings are inflated and noisy" if busy else ""
    )
    print(
        f"\n  (1-min load average {load_before:.2f} before, {load_after:.2f} after, {threads} threads){warning}"
    )


def report_times(title: str, times: dict[str, list[float]], batch_size: int, reference: str = "clap") -> dict:
    """Print and return the medians, and ratios to `reference` of the medians and of the minima.

    On a shared machine other processes only ever add time, so the ratio of the minima and the median of the
    per-round ratios (the models of one round run back to back, under similar load) cross-check the ratio of the
    medians.
    """
    print(f"\n{title}")
    results = {}
    base_median, base_min = statistics.median(times[reference]), min(times[reference])
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {
            "median_s": median,
            "min_s": min(values),
            "max_s": max(values),
            "all_s": values,
            "clips_per_s": batch_size / median,
            "ratio_to_clap": median / base_median,
            "ratio_of_minima_to_clap": min(values) / base_min,
            "median_round_ratio_to_clap": statistics.median(
                value / base for value, base in zip(values, times[reference], strict=True)
            ),
        }
        print(
            f"  {DESCRIPTIONS[name]:<62} median {median:7.3f} s (min {min(values):.3f}, max {max(values):.3f})  "
            f"{batch_size / median:6.2f} clips/s  ratio {median / base_median:.3f} "
            f"(minima {min(values) / base_min:.3f}, per round {results[name]['median_round_ratio_to_clap']:.3f})"
        )
    return results


# ---------------------------------------------------------------------------------------------------------------
# Peak memory (one fresh subprocess per model)
# ---------------------------------------------------------------------------------------------------------------


def peak_rss_kib() -> int:
    # VmHWM, not getrusage's ru_maxrss: ru_maxrss is also the max with the parent's peak inherited across
    # fork + exec, so in a subprocess of a big benchmark it reports the parent's footprint.
    return status_kib("VmHWM")


def memory_worker(name: str, batch_size: int, threads: int) -> None:
    """Runs in a fresh process: prints one JSON line with the inference peak RSS of model `name`."""
    torch.set_num_threads(threads)
    model = build(name).eval()
    inputs = make_inputs(name, batch_size)
    gc.collect()
    calls = []
    for _ in range(2):
        before = status_kib("VmRSS")
        if not reset_peak_rss():
            raise RuntimeError(
                "the kernel did not reset VmHWM (needs Linux >= 4.0 and a writable clear_refs)"
            )
        with torch.no_grad():
            outputs = model(**inputs)
        peak = peak_rss_kib()
        del outputs
        gc.collect()
        calls.append(
            {"rss_before_mib": before / 1024, "peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024}
        )
    print(json.dumps({"name": name, "parameters_m": num_parameters(model), "calls": calls}))


def measure_memory(name: str, batch_size: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--memory_worker", name, "--inference_batch_size", str(batch_size)]
    command += ["--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory worker for {name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--batch_size", type=int, default=8, help="training-step batch (default 8, 2 with --quick)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed training steps per model (default 5, 2 with --quick)"
    )
    parser.add_argument(
        "--inference_batch_size", type=int, default=32, help="inference batch (default 32, 2 with --quick)"
    )
    parser.add_argument(
        "--inference_repeats", type=int, default=3, help="timed inference calls (default 3, 2 with --quick)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: batch 2, 2 repeats, inference batch 2"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also time MGA-CLAP with eager text attention, with SpecAugment, and without the codebook",
    )
    parser.add_argument("--skip_memory", action="store_true", help="do not measure inference peak memory")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON (default: none)")
    parser.add_argument("--memory_worker", choices=sorted(DESCRIPTIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.repeats, args.inference_batch_size, args.inference_repeats = 2, 2, 2, 2
    return args


def main() -> None:
    args = parse_args()
    if args.memory_worker:
        memory_worker(args.memory_worker, args.inference_batch_size, args.threads)
        return
    torch.set_num_threads(args.threads)
    names = ["mgaclap", "clap"]
    if args.variants:
        names += ["mgaclap_eager", "mgaclap_specaugment", "mgaclap_mean"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}"
    )
    print(
        f"training: batch {args.batch_size}, {MEL_FRAMES} x 64 log-mels (10 s), {TEXT_LENGTH} tokens, "
        f"1 warm-up + {args.repeats} interleaved steps per model; inference: batch {args.inference_batch_size}, "
        f"1 warm-up + {args.inference_repeats} calls"
    )
    models = {name: build(name) for name in names}
    for name, model in models.items():
        text_attention = model.text_model.config._attn_implementation
        print(
            f"  {DESCRIPTIONS[name]:<62} {num_parameters(model):7.2f} M parameters, text attention {text_attention}"
        )
    results = {"settings": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}

    for model in models.values():
        model.train()
    inputs = {name: make_inputs(name, args.batch_size) for name in names}
    load_before = os.getloadavg()[0]
    train_times = interleaved(names, models, inputs, train_step, args.repeats)
    load_note(load_before, args.threads)
    results["train_step"] = report_times(
        f"Training step (forward + backward, return_loss=True, batch {args.batch_size}):",
        train_times,
        args.batch_size,
    )
    ratio = results["train_step"]["mgaclap"]["ratio_to_clap"]
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    print(
        f"  => MGAClapModel / ClapModel training-step ratio (medians) {ratio:.3f}, target <= {TARGET_RATIO:.2f}: "
        f"{verdict}"
    )

    for model in models.values():
        model.zero_grad(set_to_none=True)
        model.eval()
    inference_names = [name for name in names if name != "mgaclap_specaugment"]  # SpecAugment is train-only
    inputs = {name: audio_only(make_inputs(name, args.inference_batch_size)) for name in inference_names}
    load_before = os.getloadavg()[0]
    inference_times = interleaved(
        inference_names, models, inputs, audio_embedding_step, args.inference_repeats
    )
    load_note(load_before, args.threads)
    results["audio_embedding"] = report_times(
        f"Inference, get_audio_features under no_grad (eval, batch {args.inference_batch_size}):",
        inference_times,
        args.inference_batch_size,
    )
    del models, inputs
    gc.collect()

    if not args.skip_memory:
        print(
            f"\nPeak memory of inference, model(**inputs) under no_grad (eval, batch {args.inference_batch_size}, "
            "audio + text embeddings and logits), fresh process per model, peak RSS = VmHWM after clear_refs:"
        )
        results["inference_memory"] = {}
        for name in ["mgaclap", "clap"]:
            memory = measure_memory(name, args.inference_batch_size, args.threads)
            results["inference_memory"][name] = memory
            cold, warm = memory["calls"]
            print(
                f"  {DESCRIPTIONS[name]:<62} peak RSS {cold['peak_mib']:8.1f} MiB "
                f"(+{cold['growth_mib']:.1f} MiB over the {cold['rss_before_mib']:.1f} MiB of the loaded model and "
                f"inputs); second call peak {warm['peak_mib']:.1f} MiB (+{warm['growth_mib']:.1f} MiB)"
            )

    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
