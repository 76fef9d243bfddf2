"""Temporal order: are the global embeddings order-blind, and does the frame-level grounding know the order? (CPU)

    python benchmarks/benchmark_temporal_order.py --models MGA-CLAP=outputs/ablations/full \\
        "CLAP (vanilla)=outputs/ablations/vanilla"            # folders of benchmarks/reproduce_ablations.py
    python benchmarks/benchmark_temporal_order.py --quick     # smoke run (a minute)

Data: 5 s single-event clips of the 16 synthetic classes from the "test" random stream (never seen in training,
`data.soundscapes.build_labelled_clip_dataset`), composed from the class pairs that TeminAL post-training holds out
(`split_class_pairs(16, 0.25, seed=0)`, as `benchmarks/benchmark_few_shot_temporal.py`).

1. **Diagnosis** (every model): mean cosine of the global embeddings of "a then b" against "b then a" (swapped order)
   and against "a then c" (swapped content), for the audio (5 s slots concatenated) and for the text ("a before b").
   A cosine near 1 for the swapped order and well below for the swapped content means order-blind.
2. **ZSTE-style order** (`extensions.temporal.evaluate_temporal`, every model with `--conditions`): order accuracy (true
   vs reversed order, chance 50 %), 3-way relation accuracy (order, reversed, simultaneous; chance 33 %) and
   while-vs-then accuracy (chance 50 %), each by the global cosine and by the training-free frame-grounded relation
   score (`temporal_relations`), on clean composites, with white noise at 10 dB SNR, with a 1 s gap and a 1 s
   overlap between the events, and with gaps and overlaps drawn per pair between 0.5 and 2 s.
3. **Trained relation head** (`--calibration_pairs N`): the three constants of the frame-grounded probabilities fitted
   (`extensions.temporal.fit_temporal_calibration`) on N draws of the *training* class pairs from the training
   stream, then the clean ZSTE again ("clean, fitted head"). The model itself is not changed.
4. **Coarse tasks** (`--coarse_clips N`): zero-shot classification accuracy (N single-event clips, "{} can be heard")
   and text-to-audio R@1 (N // 2 clips, 5 captions each) on the held-out synthetic sets of `reproduce_ablations.py`
   (`evaluation.synthetic.synthetic_dataset`, seed 1234), scored as `evaluation.tasks` scores them; every model after
   the first is compared with the first item by item (paired difference and its 95 % interval), which is what "a
   post-training keeps the coarse tasks" needs: two unpaired accuracies on a few hundred clips differ by several
   points by chance.

Writes `results.json` and `results.md` (README-ready tables) into `--output_dir`.
"""

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
# name -> evaluate_temporal keyword arguments
CONDITIONS = {
    "clean": {},
    "noise 10 dB": {"noise_snr_db": 10.0},
    "gap 1 s": {"gap_seconds": 1.0},
    "overlap 1 s": {"gap_seconds": -1.0},
    "gap 0.5-2 s": {"gap_seconds": (0.5, 2.0)},  # drawn per pair
    "overlap 0.5-2 s": {"gap_seconds": (-2.0, -0.5)},
}
QUICK = {"clips_per_class": 2, "diagnosis_pairs": 4, "temporal_pairs": 4, "conditions": ["clean"]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--models",
        nargs="+",
        default=[f"MGA-CLAP={ROOT / 'outputs' / 'mgaclap-pretrain'}"],
        help="NAME=FOLDER of each saved model (the first is the reference of the tables).",
    )
    parser.add_argument(
        "--output_dir",
        default=str(ROOT / "outputs" / "benchmark-temporal-order"),
        help="Where results.json and results.md go.",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the clips and draws.")
    parser.add_argument(
        "--clips_per_class",
        type=int,
        default=20,
        help="Held-out labelled clips per class (20: the clips of benchmark_few_shot_temporal.py).",
    )
    parser.add_argument(
        "--diagnosis_pairs", type=int, default=30, help="Diagnosis: ordered class-pair draws."
    )
    parser.add_argument(
        "--temporal_pairs", type=int, default=100, help="ZSTE: class-pair draws per condition."
    )
    parser.add_argument(
        "--conditions",
        nargs="*",
        default=list(CONDITIONS),
        choices=list(CONDITIONS),
        help="ZSTE conditions to run (each model); none with an empty list.",
    )
    parser.add_argument(
        "--diagnosis_only",
        nargs="*",
        default=[],
        help="NAMEs of models measured by the diagnosis only (no ZSTE conditions).",
    )
    parser.add_argument(
        "--calibration_pairs",
        type=int,
        default=0,
        help="Draws of the training class pairs the relation head is fitted on (0: no fitted head).",
    )
    parser.add_argument(
        "--coarse_clips",
        type=int,
        default=0,
        help="Classification clips of the coarse-task comparison (retrieval: half as many; 0: none).",
    )
    parser.add_argument("--quick", action="store_true", help="Smoke run: " + json.dumps(QUICK))
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


def load(folder: str):
    from transformers import AutoModel, AutoProcessor

    import transformers_mgaclap  # noqa: F401 - registers MGA-CLAP with the Auto classes

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


def draw_triples(
    labels: list[int], pairs: list[tuple[int, int]], num: int, seed: int
) -> list[tuple[int, int, int]]:
    """`(clip a, clip b, clip c)`: a held-out class pair in random order and a clip of a third class."""
    from transformers_mgaclap.extensions.temporal import sample_pair_clips

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    triples = []
    for first, second in sample_pair_clips(labels, pairs, num, rng):
        others = np.flatnonzero((labels != labels[first]) & (labels != labels[second]))
        triples.append((first, second, int(rng.choice(others))))
    return triples


@torch.no_grad()
def diagnosis(model, processor, waveforms, texts, triples) -> dict[str, float]:
    """Mean cosines of the global embeddings: swapped order vs swapped content, audio and text."""
    from transformers_mgaclap.embedding import embed_audio, embed_text
    from transformers_mgaclap.extensions.temporal import CompositeLayout, build_temporal_example

    rate = processor.feature_extractor.sampling_rate
    layout = CompositeLayout(5 * rate)

    def sequence(x, y):
        return build_temporal_example(waveforms[x], texts[x], waveforms[y], texts[y], "before", layout).audio

    audio = [sequence(x, y) for a, b, c in triples for x, y in ((a, b), (b, a), (a, c))]
    clip = embed_audio(model, processor, audio, batch_size=8, progress=True).clip_embeds.view(
        len(triples), 3, -1
    )
    captions = [f"{texts[x]} before {texts[y]}" for a, b, c in triples for x, y in ((a, b), (b, a), (a, c))]
    text = embed_text(model, processor, captions).text_embeds.view(len(triples), 3, -1)
    return {
        "audio_swapped_order": float((clip[:, 0] * clip[:, 1]).sum(-1).mean()),
        "audio_swapped_content": float((clip[:, 0] * clip[:, 2]).sum(-1).mean()),
        "text_swapped_order": float((text[:, 0] * text[:, 1]).sum(-1).mean()),
        "text_swapped_content": float((text[:, 0] * text[:, 2]).sum(-1).mean()),
    }


@torch.no_grad()
def coarse_hits(model, processor, classification, retrieval) -> dict[str, np.ndarray]:
    """Per-item top-1 hits: zero-shot classification per clip and text-to-audio retrieval per caption, from the
    scores `evaluation.tasks` computes for those tasks (argmax with ties to the lowest class, as the accuracy metric;
    retrieval ties count against the query), so that two models can be compared item by item."""
    from transformers_mgaclap.evaluation.retrieval import text_to_audio_ranks
    from transformers_mgaclap.evaluation.tasks import (
        DEFAULT_COLUMNS,
        DEFAULT_PROMPTS,
        classification_scores,
        retrieval_similarity,
    )

    template = DEFAULT_PROMPTS["classification"]
    scores, references, _ = classification_scores(
        model, processor, classification, DEFAULT_COLUMNS, 16, True, template
    )
    similarity, owners = retrieval_similarity(model, processor, retrieval, DEFAULT_COLUMNS, 16, True)
    return {
        "classification": scores.argmax(-1) == np.asarray(references),
        "t2a_R@1": text_to_audio_ranks(similarity, owners) == 0,
    }


def paired_difference(hits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean of the per-item differences (in points) and the half-width of its 95 % interval."""
    from transformers_mgaclap.evaluation.report import mean_confidence_interval

    mean, half = mean_confidence_interval(100.0 * (hits.astype(float) - reference.astype(float)))
    return {"difference": mean, "ci95": half}


def coarse_table(results: dict) -> list[str]:
    names = [name for name, entry in results["models"].items() if "coarse" in entry]
    if not names:
        return []
    lines = [
        "",
        f"**Coarse tasks** ({results['coarse_protocol']}), % and the paired difference from {names[0]} [95 % interval]",
        "",
        "| model | classification | difference | T→A R@1 | difference |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        entry, cells = results["models"][name], []
        for task in ("classification", "t2a_R@1"):
            cells.append(f"{entry['coarse'][task]:.1f}")
            paired = entry.get("coarse_difference", {}).get(task)
            cells.append(
                ""
                if paired is None
                else f"{paired['difference']:+.1f} [{paired['difference'] - paired['ci95']:+.1f}, "
                f"{paired['difference'] + paired['ci95']:+.1f}]"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def tables(results: dict) -> str:
    names = list(results["models"])
    lines = [
        f"**Diagnosis** ({results['diagnosis_protocol']}): mean cosine of the global embeddings",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    rows = {
        "audio_swapped_order": 'audio, "a then b" vs "b then a"',
        "audio_swapped_content": 'audio, "a then b" vs "a then c"',
        "text_swapped_order": 'text, "a before b" vs "b before a"',
        "text_swapped_content": 'text, "a before b" vs "a before c"',
    }
    for key, title in rows.items():
        lines.append(
            f"| {title} | "
            + " | ".join(f"{results['models'][n]['diagnosis'][key]:.3f}" for n in names)
            + " |"
        )
    lines += [
        "",
        f"**Order from the global cosine vs the frame-level grounding** ({results['zste_protocol']}), accuracy (%)",
        "",
        "| model | condition | order: global | order: frames | 3-way: global | 3-way: frames "
        "| while vs then: global | while vs then: frames |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("order_accuracy", "relation_accuracy", "while_vs_then_accuracy")
    for name in names:
        for condition, m in results["models"][name].get("zste", {}).items():
            cells = [m[f"{prefix}{key}"] for key in keys for prefix in ("", "frame_")]
            lines.append(f"| {name} | {condition} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |")
    return "\n".join(lines + coarse_table(results))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    models = dict(spec.split("=", 1) for spec in args.models)
    for name, folder in models.items():
        if not os.path.exists(os.path.join(folder, "config.json")):
            print(f"No model at {folder} ({name}): train one with examples/pretrain.py first.")
            return 1
    from transformers_mgaclap.data.labels import label_text
    from transformers_mgaclap.data.soundscapes import build_labelled_clip_dataset
    from transformers_mgaclap.data.sources import load_waveforms
    from transformers_mgaclap.extensions.temporal import (
        evaluate_temporal,
        fit_temporal_calibration,
        split_class_pairs,
    )

    os.makedirs(args.output_dir, exist_ok=True)
    clips = build_labelled_clip_dataset(
        args.clips_per_class, seed=args.seed, split_name="test", progress=True
    )
    names = clips.features["label"].names
    train_pairs, heldout_pairs = split_class_pairs(len(names), 0.25, seed=0)
    training_clips = build_labelled_clip_dataset(args.clips_per_class, seed=args.seed + 1, split_name="train")
    triples = draw_triples(clips["label"], heldout_pairs, args.diagnosis_pairs, args.seed)
    texts = [label_text(names[label]) for label in clips["label"]]
    results = {
        "args": vars(args),
        "diagnosis_protocol": f"{len(triples)} ordered draws of {len(heldout_pairs)} held-out class pairs, 5 s slots",
        "zste_protocol": (
            f"{args.temporal_pairs} draws of the held-out class pairs, 5 s slots; chance 50 / 33 / 50 %"
        ),
        "models": {},
    }
    if args.coarse_clips:
        from transformers_mgaclap.evaluation.synthetic import synthetic_dataset

        coarse_sets = [
            synthetic_dataset(task, n)
            for task, n in (("classification", args.coarse_clips), ("retrieval", args.coarse_clips // 2))
        ]
        results["coarse_protocol"] = (
            f"held-out synthetic sets: {args.coarse_clips} classification clips, {args.coarse_clips // 2} retrieval "
            "clips with 5 captions"
        )
        reference_hits = None
    for name, folder in models.items():
        model, processor = load(folder)
        waveforms = load_waveforms(clips, "audio", processor.feature_extractor.sampling_rate, progress=True)
        tick = time.perf_counter()
        entry = {
            "folder": folder,
            "diagnosis": diagnosis(model, processor, waveforms, texts, triples),
            "zste": {},
        }
        print(f"{name} diagnosis: {entry['diagnosis']}", flush=True)
        zste = functools.partial(  # the ZSTE of every condition: the same draws of the held-out pairs
            evaluate_temporal,
            model,
            processor,
            clips,
            num_pairs=args.temporal_pairs,
            pairs=heldout_pairs,
            seed=args.seed,
            progress=True,
        )
        for condition in [] if name in args.diagnosis_only else args.conditions:
            entry["zste"][condition] = zste(**CONDITIONS[condition])
            print(f"{name} {condition}: {entry['zste'][condition]}", flush=True)
        if args.calibration_pairs and name not in args.diagnosis_only:
            calibration = fit_temporal_calibration(
                model,
                processor,
                training_clips,
                num_pairs=args.calibration_pairs,
                pairs=train_pairs,
                seed=args.seed,
            )
            entry["fitted_calibration"] = vars(calibration)
            entry["zste"]["clean, fitted head"] = zste(calibration=calibration)
            print(f"{name} fitted head {calibration}: {entry['zste']['clean, fitted head']}", flush=True)
        if args.coarse_clips:
            hits = coarse_hits(model, processor, *coarse_sets)
            entry["coarse"] = {task: 100.0 * float(h.mean()) for task, h in hits.items()}
            if reference_hits is None:
                reference_hits = hits
            else:
                entry["coarse_difference"] = {
                    task: paired_difference(h, reference_hits[task]) for task, h in hits.items()
                }
            print(f"{name} coarse: {entry['coarse']} {entry.get('coarse_difference', '')}", flush=True)
        entry["seconds"] = time.perf_counter() - tick
        results["models"][name] = entry
        with open(os.path.join(args.output_dir, "results.json"), "w") as file:
            json.dump(results, file, indent=2)  # after every model: a long run keeps what it measured
    markdown = tables(results)
    with open(os.path.join(args.output_dir, "results.md"), "w") as file:
        file.write(markdown + "\n")
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
