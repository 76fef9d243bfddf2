"""The README's figures, made from trained folders so that they can be regenerated whenever the numbers change.

- `frame_similarity.png`: the frame-by-text cosine of the embedded default model (`accelerate launch
  examples/pretrain.py`) on a held-out synthetic clip, the reference events shaded: the picture its model card shows.
- `frame_similarity_vanilla.png`: the same clip through the vanilla CLAP variant of the ablations (its first seed),
  when `--ablations_dir` holds one: what the codebook and the locality-aware block change.
- `ablations.png`: the table of `benchmarks/reproduce_ablations.py` (its `ablations.json`) as bars with their 95 %
  intervals over seeds, one panel per metric.

Run:  python benchmarks/make_readme_figures.py          (after the README's training command and the ablations)
Outputs: `--output_dir` (default docs/figures), PNGs that the README shows and git keeps.
"""

import argparse
import json
from pathlib import Path

from harness import HelpFormatter  # benchmarks/harness.py (scripts run from their folder)

ROOT = Path(__file__).resolve().parents[1]
# Panels of the ablation chart: (key in ablations.json's "scores", title). SED PSDS1 is left out: it is 0 for every
# variant at this budget (see the README), and a panel of zeros says nothing.
PANELS = (
    ("retrieval", "t2a R@1 (%)"),
    ("classification", "classification accuracy"),
    ("grounding", "grounding PSDSm"),
    ("frame_accuracy", "frame accuracy"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--model_name_or_path",
        default="outputs/mgaclap-pretrain",
        help="The embedded default model: the folder the README's training command writes.",
    )
    parser.add_argument(
        "--ablations_dir",
        default="outputs/ablations",
        help="The output folder of benchmarks/reproduce_ablations.py (ablations.json, and the vanilla variant's "
        "first seed).",
    )
    parser.add_argument("--output_dir", default=str(ROOT / "docs" / "figures"), help="Where the PNGs go.")
    parser.add_argument("--seed", type=int, default=1234, help="Seed of the held-out synthetic stream.")
    return parser.parse_args(argv)


def plot_ablations(path: Path, rows: list[dict]) -> None:
    """One horizontal bar panel per metric of `PANELS`, one bar per variant, in the table's order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = [row["title"] for row in rows][::-1]  # barh draws bottom-up; keep the table's top row on top
    seeds = len(rows[0]["runs"])
    figure, axes = plt.subplots(
        1, len(PANELS), figsize=(3.0 * len(PANELS), 0.45 * len(rows) + 1.2), sharey=True
    )
    for axis, (key, title) in zip(axes, PANELS, strict=True):
        values = [row["scores"][key]["mean"] for row in rows][::-1]
        errors = [row["scores"][key]["ci95"] if seeds > 1 else 0.0 for row in rows][::-1]
        colors = ["tab:gray" if t == "vanilla CLAP" else "tab:blue" for t in titles]
        axis.barh(titles, values, xerr=errors, color=colors, error_kw={"capsize": 3})
        for y, (value, error) in enumerate(zip(values, errors, strict=True)):
            label = f" {value:.1f}" if key == "retrieval" else f" {value:.2f}"
            axis.text(value + error, y, label, va="center", fontsize=7)  # past the interval, not under it
        axis.set_title(title, fontsize=9)
        axis.set_xlim(0, 1.35 * max(v + e for v, e in zip(values, errors, strict=True)))
        axis.tick_params(labelsize=8)
    spread = f"mean of {seeds} seeds, bars: 95 % interval" if seeds > 1 else "one seed"
    figure.suptitle(f"Ablations in miniature (benchmarks/reproduce_ablations.py, {spread})", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_model(folder: Path, path: Path, seed: int, name: str) -> dict:
    import torch
    from transformers import AutoModel, AutoProcessor

    from transformers_mgaclap.evaluation.plots import plot_held_out_clip  # registers the Auto classes too

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    with torch.no_grad():
        return plot_held_out_clip(model, processor, path, seed=seed, model_name=name)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output, ablations = Path(args.output_dir), Path(args.ablations_dir)
    for required in (Path(args.model_name_or_path) / "config.json", ablations / "ablations.json"):
        if not required.is_file():
            raise SystemExit(
                f"{required} is missing: run `accelerate launch examples/pretrain.py` and "
                "`python benchmarks/reproduce_ablations.py` first (or point --model_name_or_path / --ablations_dir "
                "at their outputs)."
            )
    clip = plot_model(Path(args.model_name_or_path), output / "frame_similarity.png", args.seed, "MGA-CLAP")
    written = ["frame_similarity.png"]
    results = json.loads((ablations / "ablations.json").read_text())
    vanilla = ablations / "vanilla" / f"seed_{results['seeds'][0]}"
    if (vanilla / "config.json").is_file():
        plot_model(vanilla, output / "frame_similarity_vanilla.png", args.seed, "vanilla CLAP")
        written.append("frame_similarity_vanilla.png")
    plot_ablations(output / "ablations.png", results["variants"])
    written.append("ablations.png")
    print(f"Held-out clip {clip['clip_id']}; wrote {', '.join(written)} to {output}")


if __name__ == "__main__":
    main()
