"""Does the float32 STFT of `MGAClapFeatureExtractor` move the model's embeddings? Paper geometry, random weights.

Requirement (issue "Faster by default"): the global audio embeddings and the frame embeddings of a model with the
paper's audio tower (`MGAClapConfig()`: HTS-AT, 1024-d projection, 4096-word codebook; random weights, eval, float32),
computed from features of `precision="float32"`, stay within 1e-4 (max abs difference) of those computed from
`precision="float64"` features, on noise, pure tones, silence with short tones, chirps and clipped audio.

Prints one row per signal kind: the max abs difference of the log-mel features (dB), of the normalised global
embeddings (`pooler_output`) and of the projected frame embeddings (`local_embeds`), and exits with status 1 when an
embedding difference exceeds `--atol`. The text tower is tiny: only audio is embedded.

    python benchmarks/check_feature_precision.py [--clips 2] [--threads 2] [--atol 1e-4]
"""

import argparse
import sys

import numpy as np
import torch

from transformers_mgaclap import MGAClapConfig, MGAClapFeatureExtractor, MGAClapModel

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)

SAMPLING_RATE = 32000
NUM_SAMPLES = 10 * SAMPLING_RATE
SIGNAL_KINDS = ("noise", "tones", "silence_with_tones", "chirp", "clipped")
TINY_TEXT = dict(
    vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
)


def make_signal(kind: str, seed: int) -> np.ndarray:
    """10 s of one signal kind at 32 kHz, float32 as decoded audio usually is; `seed` varies levels and pitches."""
    rng = np.random.default_rng(seed)
    t = np.arange(NUM_SAMPLES) / SAMPLING_RATE
    if kind == "noise":
        signal = 0.1 * rng.standard_normal(NUM_SAMPLES)
    elif kind == "tones":  # steady partials: every other band is far below the frame energy
        signal = sum(0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 4000, size=2))
    elif kind == "silence_with_tones":  # exact zeros between 200 ms bursts: frames at the floor, and onsets
        bursts = sum((abs(t - centre) < 0.1) for centre in rng.uniform(0.5, 9.5, size=3))
        signal = 0.5 * bursts * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    elif kind == "chirp":  # linear sweep over the whole mel range
        low, high = 50.0, rng.uniform(12000, 15000)
        signal = 0.5 * np.sin(2 * np.pi * (low * t + (high - low) / 20 * t**2))
    elif kind == "clipped":  # an overdriven tone plus noise, hard-clipped: harmonics up to Nyquist
        overdriven = 3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.05 * rng.standard_normal(t.size)
        signal = np.clip(overdriven, -1, 1)
    else:
        raise ValueError(f"unknown signal kind {kind!r}")
    return signal.astype(np.float32)


def paper_geometry_model(seed: int = 0) -> MGAClapModel:
    """MGA-CLAP with the default (paper) audio tower and head, random weights, in eval mode."""
    torch.manual_seed(seed)
    return MGAClapModel(MGAClapConfig(text_config=dict(TINY_TEXT))).eval()


@torch.no_grad()
def embedding_differences(model: MGAClapModel, clips: list[np.ndarray]) -> dict[str, float]:
    """Max abs differences between float32- and float64-STFT features, and between the embeddings they give."""
    inputs = {
        precision: MGAClapFeatureExtractor(precision=precision)(
            clips, sampling_rate=SAMPLING_RATE, return_tensors="pt"
        )
        for precision in ("float32", "float64")
    }
    outputs = {precision: model.get_audio_features(**batch) for precision, batch in inputs.items()}
    fast, exact = outputs["float32"], outputs["float64"]
    features_db = inputs["float32"]["input_features"] - inputs["float64"]["input_features"]
    return {
        "features_db": features_db.abs().max().item(),
        "global": (fast.pooler_output - exact.pooler_output).abs().max().item(),
        "frames": (fast.local_embeds - exact.local_embeds).abs().max().item(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--clips", type=int, default=2, help="clips per signal kind (different seeds)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest admissible embedding difference")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = paper_geometry_model()
    print(f"{'signal':20s} {'features (dB)':>14s} {'global':>10s} {'frames':>10s}")
    worst = 0.0
    for kind in SIGNAL_KINDS:
        differences = embedding_differences(model, [make_signal(kind, seed) for seed in range(args.clips)])
        worst = max(worst, differences["global"], differences["frames"])
        print(
            f"{kind:20s} {differences['features_db']:14.2e} {differences['global']:10.2e} {differences['frames']:10.2e}"
        )
    print(f"largest embedding difference {worst:.2e} (admissible {args.atol:g})")
    return int(worst > args.atol)


if __name__ == "__main__":
    sys.exit(main())
