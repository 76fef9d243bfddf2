"""Few-shot recognition and TeminAL-style temporal post-training on the synthetic sound classes (CPU).

Issue requirement: "a table in the README of zero-shot vs Tip-Adapter vs multi-grained at K = 1, 5, and the temporal
accuracy before and after TeminAL post-training, produced by a benchmark script, honest whatever the outcome."

The model is the one trained by the embedded default of the pre-training example (synthetic soundscapes, about 6
minutes on 2 CPU cores):

    accelerate launch examples/pretrain.py            # writes outputs/mgaclap-pretrain
    python benchmarks/benchmark_few_shot_temporal.py  # about 12 min on 2 (loaded) cores
    python benchmarks/benchmark_few_shot_temporal.py --quick   # smoke run (minutes)

What is measured, all on clips the pre-training never saw (the "test" random stream of
`data.soundscapes.build_labelled_clip_dataset`: 5 s single-event clips of the 16 synthetic classes):

1. Few-shot: `--num_splits` fixed splits of `--n_way` of the 16 classes, `--episodes` episodes per split, K in
   `--k_shot`, `--n_query` queries per class; zero-shot, Tip-Adapter, Treff adapter, multi-grained (training-free)
   and multi-grained (trained), all on the same episodes with `FewShotConfig()` defaults (no tuning on these data).
   Class texts: "{label} can be heard" plus the class's own phrases as descriptions.
2. Before and after TeminAL post-training (`transformers_mgaclap.training.teminal` on clips of the training stream, with a
   quarter of the class pairs held out): ZSTE accuracy on composites of the held-out pairs (per relation, 5
   candidates; order accuracy: true vs reversed order only), 16-way zero-shot classification of the single clips,
   and text-to-audio / audio-to-text R@1 on held-out soundscapes (5 captions per clip), the coarse tasks the
   post-training must not cost.

Writes `results.json` and `results.md` (README-ready tables) into `--output_dir`.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from transformers_mgaclap.utils.cli import require_extra_or_exit

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
QUICK = {
    "clips_per_class": 4,
    "episodes": 2,
    "num_splits": 2,
    "k_shot": [1],
    "n_query": 3,
    "temporal_pairs": 8,
    "train_clips_per_class": 3,
    "stage_a_steps": 1,
    "stage_b_steps": 1,
    "pairs_per_batch": 2,
    "retrieval_clips": 8,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--model_name_or_path",
        default=str(ROOT / "outputs" / "mgaclap-pretrain"),
        help="The pre-trained model; produce it with `accelerate launch examples/pretrain.py`.",
    )
    parser.add_argument(
        "--output_dir",
        default=str(ROOT / "outputs" / "benchmark-few-shot-temporal"),
        help="Where results.json, results.md and the post-trained model go.",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the clips, episodes and post-training.")
    parser.add_argument("--clips_per_class", type=int, default=20, help="Held-out labelled clips per class.")
    parser.add_argument("--n_way", type=int, default=5, help="Few-shot: classes per episode.")
    parser.add_argument("--k_shot", type=int, nargs="+", default=[1, 5], help="Few-shot: supports per class.")
    parser.add_argument("--n_query", type=int, default=10, help="Few-shot: queries per class.")
    parser.add_argument("--num_splits", type=int, default=5, help="Few-shot: fixed class splits.")
    parser.add_argument("--episodes", type=int, default=10, help="Few-shot: episodes per split.")
    parser.add_argument("--temporal_pairs", type=int, default=100, help="ZSTE: class-pair draws.")
    parser.add_argument(
        "--heldout_pair_fraction",
        type=float,
        default=0.25,
        help="Share of class pairs kept out of the post-training (ZSTE is measured on them).",
    )
    parser.add_argument(
        "--train_clips_per_class", type=int, default=16, help="Post-training: synthetic clips per class."
    )
    parser.add_argument("--stage_a_steps", type=int, default=12, help="Post-training: stage A steps.")
    parser.add_argument("--stage_b_steps", type=int, default=24, help="Post-training: stage B steps.")
    parser.add_argument(
        "--pairs_per_batch", type=int, default=4, help="Post-training: class pairs per step (3 clips each)."
    )
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="Post-training: learning rate.")
    parser.add_argument(
        "--retrieval_clips", type=int, default=100, help="Held-out soundscapes of the retrieval R@1."
    )
    parser.add_argument("--quick", action="store_true", help="Smoke run: " + json.dumps(QUICK))
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


def load(folder):
    from transformers import AutoModel, AutoProcessor

    import transformers_mgaclap  # noqa: F401 - registers MGA-CLAP with the Auto classes

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


@torch.no_grad()
def coarse_and_temporal(model, processor, clips, waveforms, soundscapes, heldout_pairs, args) -> dict:
    """ZSTE on held-out pairs, 16-way zero-shot classification, retrieval R@1."""
    from transformers_mgaclap.data.labels import label_text
    from transformers_mgaclap.data.sources import load_waveforms
    from transformers_mgaclap.embedding import embed_audio, embed_text
    from transformers_mgaclap.evaluation.retrieval import retrieval_metrics
    from transformers_mgaclap.extensions.few_shot import (
        default_class_prompts,
        extract_audio_features,
        extract_class_texts,
        zero_shot_logits,
    )
    from transformers_mgaclap.extensions.temporal import evaluate_temporal

    names = [label_text(n) for n in clips.features["label"].names]
    features = extract_audio_features(model, processor, waveforms, progress=True)
    texts = extract_class_texts(model, processor, default_class_prompts(names))
    predictions = zero_shot_logits(features, texts, 1.0).argmax(1).numpy()
    metrics = {"classification_accuracy": float((predictions == np.asarray(clips["label"])).mean())}

    rate = processor.feature_extractor.sampling_rate
    audio = embed_audio(
        model,
        processor,
        load_waveforms(soundscapes, "audio", rate, progress=True),
        batch_size=16,
        progress=True,
    ).clip_embeds
    captions = [caption for clip_captions in soundscapes["captions"] for caption in clip_captions]
    owners = [clip for clip, clip_captions in enumerate(soundscapes["captions"]) for _ in clip_captions]
    text = embed_text(model, processor, captions).text_embeds
    recall = retrieval_metrics((text @ audio.t()).cpu().numpy(), owners, ks=(1,), percentage=False)
    metrics.update({key: recall[key] for key in ("t2a_R@1", "a2t_R@1")})
    temporal = evaluate_temporal(
        model,
        processor,
        clips,
        num_pairs=args.temporal_pairs,
        pairs=heldout_pairs or None,
        seed=args.seed,
        progress=True,
    )
    metrics.update({f"temporal_{key}": value for key, value in temporal.items()})
    return metrics


def run_post_training(args, out: str) -> float:
    from transformers_mgaclap.training.teminal import TemporalPostTrainingArguments, post_train_temporal

    started = time.perf_counter()
    code = post_train_temporal(
        TemporalPostTrainingArguments(
            model_name_or_path=args.model_name_or_path,
            output_dir=out,
            synthetic_clips_per_class=args.train_clips_per_class,
            heldout_pair_fraction=args.heldout_pair_fraction,
            stage_a_steps=args.stage_a_steps,
            stage_b_steps=args.stage_b_steps,
            pairs_per_batch=args.pairs_per_batch,
            learning_rate=args.learning_rate,
            seed=args.seed,
            logging_steps=10,
        )
    )
    if code != 0:
        raise RuntimeError(f"The post-training exited with {code}")
    return time.perf_counter() - started


def tables(results: dict) -> str:
    from transformers_mgaclap.extensions.few_shot import markdown_table

    lines = [
        f"**Few-shot** ({results['protocol']}): mean accuracy (%) ± 95 % interval over episodes",
        "",
        markdown_table(results["few_shot"]),
    ]
    before, after = results["before"], results["after"]
    lines += [
        "",
        f"**TeminAL-style post-training** ({results['post_training']}): ZSTE accuracy (%) on held-out class pairs, "
        "5 candidate captions; order = true vs reversed order only",
        "",
        "| model | before | after | while | single | mean | order | zero-shot cls. | T→A R@1 | A→T R@1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in (("pre-trained", before), ("+ TeminAL A+B", after)):
        cells = [m[f"temporal_accuracy_{r}"] for r in ("before", "after", "while", "single")]
        cells += [m["temporal_accuracy"], m["temporal_order_accuracy"], m["classification_accuracy"]]
        cells += [m["t2a_R@1"], m["a2t_R@1"]]
        lines.append(f"| {name} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    require_extra_or_exit(
        "train", ("accelerate", "datasets", "scipy"), "benchmarks/benchmark_few_shot_temporal.py"
    )
    torch.set_num_threads(args.threads)
    if not os.path.exists(os.path.join(args.model_name_or_path, "config.json")):
        print(f"No model at {args.model_name_or_path}: run `accelerate launch examples/pretrain.py` first.")
        return 1
    os.makedirs(args.output_dir, exist_ok=True)
    from transformers_mgaclap.data.labels import label_text
    from transformers_mgaclap.data.soundscapes import (
        build_labelled_clip_dataset,
        build_soundscape_dataset,
        get_sound_event_class,
    )
    from transformers_mgaclap.data.sources import load_waveforms
    from transformers_mgaclap.extensions.few_shot import (
        FewShotConfig,
        default_class_prompts,
        evaluate_few_shot,
    )
    from transformers_mgaclap.extensions.temporal import split_class_pairs

    started = time.perf_counter()
    timings = {}
    model, processor = load(args.model_name_or_path)
    clips = build_labelled_clip_dataset(
        args.clips_per_class, seed=args.seed, split_name="test", progress=True
    )
    waveforms = load_waveforms(clips, "audio", processor.feature_extractor.sampling_rate, progress=True)
    soundscapes = build_soundscape_dataset(
        args.retrieval_clips, seed=args.seed, split_name="test", progress=True
    )
    names = clips.features["label"].names

    # 1. Few-shot episodes with the pre-trained model.
    tick = time.perf_counter()
    descriptions = {label_text(n): list(get_sound_event_class(n).phrases) for n in names}
    prompts = default_class_prompts([label_text(n) for n in names], descriptions=descriptions)
    config = FewShotConfig()
    if args.quick:
        config.train_epochs = config.treff_epochs = 2
    few_shot = evaluate_few_shot(
        model, processor, clips, prompts, k_shots=args.k_shot, n_way=args.n_way, n_query=args.n_query,
        num_splits=args.num_splits, split_seed=args.seed, episodes_per_split=args.episodes, config=config,
        seed=args.seed, progress=True,
    )  # fmt: skip
    timings["few_shot_s"] = time.perf_counter() - tick

    # 2. Temporal and coarse tasks before and after post-training.
    _, heldout_pairs = split_class_pairs(len(names), args.heldout_pair_fraction, seed=0)
    tick = time.perf_counter()
    before = coarse_and_temporal(model, processor, clips, waveforms, soundscapes, heldout_pairs, args)
    timings["evaluation_before_s"] = time.perf_counter() - tick
    print(f"before: {before}", flush=True)
    post_dir = os.path.join(args.output_dir, "teminal")
    timings["post_training_s"] = run_post_training(args, post_dir)
    tuned, tuned_processor = load(post_dir)
    tick = time.perf_counter()
    after = coarse_and_temporal(tuned, tuned_processor, clips, waveforms, soundscapes, heldout_pairs, args)
    timings["evaluation_after_s"] = time.perf_counter() - tick
    print(f"after: {after}", flush=True)
    timings["total_s"] = time.perf_counter() - started

    results = {
        "args": vars(args),
        "protocol": (
            f"{args.n_way}-way, {args.num_splits} fixed class splits x {args.episodes} episodes, "
            f"{args.n_query} queries per class, {args.clips_per_class} held-out clips per class"
        ),
        "post_training": (
            f"{args.stage_a_steps} stage A + {args.stage_b_steps} stage B steps of {args.pairs_per_batch} pairs "
            f"(x 3 clips), lr {args.learning_rate}, {len(heldout_pairs)} held-out class pairs, "
            f"{args.temporal_pairs} test draws"
        ),
        "few_shot": few_shot,
        "few_shot_config": vars(config),
        "before": before,
        "after": after,
        "timings": timings,
    }
    markdown = tables(results)
    with open(os.path.join(args.output_dir, "results.json"), "w") as file:
        json.dump(results, file, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w") as file:
        file.write(markdown + "\n")
    print("\n" + markdown)
    print("\nTimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
