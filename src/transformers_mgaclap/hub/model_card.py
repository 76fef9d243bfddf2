"""Model cards for trained MGA-CLAP folders, rendered from a template of `model_cards/` (installed with the package)."""

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PRETRAINED_MODEL_TEMPLATE = files("transformers_mgaclap.model_cards") / "pretrained_model_template.md"
PIPELINE_TAG = "zero-shot-audio-classification"
TAGS = [
    "clap",
    "audio",
    "contrastive-learning",
    "zero-shot-audio-classification",
    "sound-event-detection",
    "custom_code",
]
# What the cards and the model-index call the package's synthetic soundscapes: they are not on the Hub, so the
# model-index names the module that generates them where a Hub id would go.
SYNTHETIC_SOUNDSCAPES = "synthetic soundscapes (transformers_mgaclap.data.soundscapes)"
SYNTHETIC_SOUNDSCAPES_TYPE = "transformers_mgaclap.data.soundscapes"


@dataclass(frozen=True)
class EvalDataset:
    """The data a card's metrics were measured on, as the `model-index` names it.

    Attributes:
        type: the Hub dataset id, or what identifies data that are not on the Hub.
        name: the name shown on the model page.
        split: the split the metrics come from.
    """

    type: str
    name: str
    split: str = "validation"


def eval_dataset(sources: Sequence[str] | None, split: str = "validation") -> EvalDataset:
    """The [`EvalDataset`] of a validation on `sources` (Hub ids or local folders; several are concatenated).

    No source means the package's synthetic soundscapes. A local folder is named by its base name: its path would
    mean nothing on the Hub.
    """
    if not sources:
        return EvalDataset(SYNTHETIC_SOUNDSCAPES_TYPE, SYNTHETIC_SOUNDSCAPES, split)
    names = " + ".join(Path(s).name if Path(s).exists() else s for s in sources)
    return EvalDataset(names, names, split)


def create_model_card(
    *,
    repo_id: str,
    config,
    training: dict,
    datasets: list[str],
    base_models: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    evaluated_on: EvalDataset | None = None,
    figure: str | None = None,
    license: str = "apache-2.0",
    template_path: str | Path | None = None,
) -> ModelCard:
    """Render a card with full Hub metadata (library, pipeline tag, tags, datasets, base model, model-index).

    Args:
        repo_id: where the model lives (used in the usage snippet).
        config: the model's [`MGAClapConfig`].
        training: training facts shown in the card (`learning_rate`, `batch_size`, `global_step`, ...).
        datasets: training dataset ids (Hub ids become metadata; others are only listed in the text).
        base_models: the pre-trained towers the model started from.
        metrics: evaluation results, e.g. `{"t2a_R@1": 0.41}`; they become the `model-index`.
        evaluated_on: the data of `metrics` (see [`eval_dataset`]); required with `metrics`.
        figure: a picture of frame-level similarity, as a path relative to the card (publish it with the card:
            `save_for_hub(..., files=...)`); no picture section without it.
        template_path: a Jinja template whose front matter is `{{ card_data }}`; defaults to the package's
            `model_cards/pretrained_model_template.md`.
    """
    if metrics and evaluated_on is None:
        raise ValueError(
            "`metrics` need `evaluated_on`: the model-index names the data they were measured on."
        )
    eval_results = [
        EvalResult(
            task_type="audio-text-retrieval",
            dataset_type=evaluated_on.type,
            dataset_name=evaluated_on.name,
            dataset_split=evaluated_on.split,
            metric_type=name.lower().replace("@", "_at_"),
            metric_name=name,
            metric_value=float(value),
        )
        for name, value in (metrics or {}).items()
    ]
    hub_datasets = [d for d in datasets if "/" in d and not Path(d).exists()]
    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=TAGS,
        datasets=hub_datasets or None,
        metrics=["recall"] if metrics else None,
        base_model=[m for m in (base_models or []) if m and not Path(m).exists()] or None,
        model_name=repo_id,
        eval_results=eval_results or None,
    )
    results = "\n".join(f"| {k} | {v:.4f} |" for k, v in (metrics or {}).items())
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or PRETRAINED_MODEL_TEMPLATE),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        codebook_size=config.codebook_size,
        aggregator=config.aggregator,
        codebook_pooling=config.codebook_pooling,
        codebook_activation=config.codebook_activation,
        num_locality_aware_blocks=config.num_locality_aware_blocks,
        loss=f"{config.loss} (gamma {config.hard_negative_gamma}, {config.hard_negative_variant})"
        if config.loss == "hard_negative"
        else "symmetric InfoNCE",
        datasets_text=", ".join(datasets),
        results_text=f"| metric | value |\n|---|---|\n{results}" if results else "Not evaluated.",
        evaluated_on=evaluated_on if eval_results else None,
        figure=figure,
        **training,
    )


__all__ = [
    "PIPELINE_TAG",
    "SYNTHETIC_SOUNDSCAPES",
    "TAGS",
    "EvalDataset",
    "create_model_card",
    "eval_dataset",
]
