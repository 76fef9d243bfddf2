"""Publish an MGA-CLAP model on the Hugging Face Hub: weights, processor, remote code, model card, an Inference
Endpoints handler and the `zero-shot-audio-event-detection` custom pipeline in one commit.

The pushed `config.json` carries `custom_pipelines` (as `Pipeline.save_pretrained` writes it) and
`pipeline_mgaclap.py` with its flat sibling modules sits next to the weights, so that
`pipeline("zero-shot-audio-event-detection", model=repo_id, trust_remote_code=True)` works where the package is not
installed.

```python
>>> from transformers_mgaclap.hub import push_model_to_hub
>>> push_model_to_hub(model, processor, "me/mgaclap-htsat", card=card)  # doctest: +SKIP
```
"""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData
from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from .model_card import TAGS
from .pipeline_mgaclap import TASK, MGAClapZeroShotAudioEventDetectionPipeline

HANDLER_PATH = Path(__file__).with_name("handler.py")

DEFAULT_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An MGA-CLAP model (multi-grained contrastive language-audio pre-training, arXiv 2408.07919) packaged with
transformers-mgaclap. It embeds audio and text into one space and scores text queries frame by frame.

## How to get started

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

`handler.py` serves the model on Inference Endpoints (zero-shot classification, audio / text embeddings, event
detection).
"""


def default_model_card(repo_id: str) -> ModelCard:
    """A short card with the Hub metadata MGA-CLAP repositories need (library, pipeline tag, tags)."""
    card_data = ModelCardData(
        language="en",
        library_name="transformers",
        pipeline_tag="zero-shot-audio-classification",
        tags=list(TAGS),
    )
    return ModelCard.from_template(
        card_data, template_str=DEFAULT_CARD_TEMPLATE, model_name=repo_id.split("/")[-1], repo_id=repo_id
    )


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` value of `config.json` for the `zero-shot-audio-event-detection` task.

    Built from the task's registration (done when `transformers_mgaclap` is imported) exactly as
    `Pipeline.save_pretrained` serialises it, so a repository pushed here and a folder saved by a pipeline agree.

    Returns:
        `dict`: `{"zero-shot-audio-event-detection": {"impl": "pipeline_mgaclap.MGAClap...Pipeline",
        "pt": ["AutoModel"], "type": "multimodal"}}`.
    """
    pipeline_class = MGAClapZeroShotAudioEventDetectionPipeline
    # The registry holds classes; the config holds "<flat module>.<class>" names, the way the remote-code loader
    # resolves them inside the repository.
    # Importing the package registers the task; the fallback is that registration (see `__init__.py`).
    registered = dict(PIPELINE_REGISTRY.to_dict().get(TASK) or {"pt": (AutoModel,), "type": "multimodal"})
    registered["impl"] = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
    registered["pt"] = [model_class.__name__ for model_class in registered.get("pt", ())]
    return {TASK: registered}


def _save_model_with_pipeline(model, folder: Path) -> None:
    """`model.save_pretrained(folder)` with `custom_pipelines` in its config, then the pipeline's code.

    The entry is set on the config only for the save: the caller's model is left as it was.
    """
    config = model.config
    missing = object()
    previous = getattr(config, "custom_pipelines", missing)
    config.custom_pipelines = {**(previous if isinstance(previous, dict) else {}), **custom_pipelines_entry()}
    try:
        model.save_pretrained(folder)
    finally:
        if previous is missing:
            del config.custom_pipelines
        else:
            config.custom_pipelines = previous
    # Copies pipeline_mgaclap.py and the flat modules it imports (sound_event_detection.py, ...).
    custom_object_save(MGAClapZeroShotAudioEventDetectionPipeline, folder)


def save_for_hub(
    model,
    processor,
    save_directory: str | Path,
    *,
    repo_id: str,
    card: ModelCard | None = None,
    handler: bool = True,
    pipeline: bool = True,
) -> list[str]:
    """Write everything a model repository holds into `save_directory`.

    Args:
        model ([`MGAClapModel`]): saved with `save_pretrained` (config with `auto_map`, weights, copied modules).
        processor ([`MGAClapProcessor`]): saved with `save_pretrained` (`processor_config.json` with `auto_map`,
            tokenizer files).
        save_directory: the target folder (created if needed).
        repo_id (`str`): used by the default card's usage snippet.
        card ([`~huggingface_hub.ModelCard`], *optional*): written as `README.md`; missing `library_name` /
            `pipeline_tag` are filled in. Defaults to [`default_model_card`].
        handler (`bool`, *optional*, defaults to `True`): also copy the Inference Endpoints `handler.py`.
        pipeline (`bool`, *optional*, defaults to `True`): write the `custom_pipelines` entry of
            `zero-shot-audio-event-detection` into `config.json` (see [`custom_pipelines_entry`]) and copy
            `pipeline_mgaclap.py` with the modules it imports.

    Returns:
        `list[str]`: the files written, relative to `save_directory`, sorted.
    """
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    if pipeline:
        _save_model_with_pipeline(model, folder)
    else:
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    card = card if card is not None else default_model_card(repo_id)
    if getattr(card.data, "library_name", None) is None:
        card.data.library_name = "transformers"
    if getattr(card.data, "pipeline_tag", None) is None:
        card.data.pipeline_tag = "zero-shot-audio-classification"
    card.save(folder / "README.md")
    if handler:
        shutil.copyfile(HANDLER_PATH, folder / "handler.py")
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def push_model_to_hub(
    model,
    processor,
    repo_id: str,
    *,
    card: ModelCard | None = None,
    handler: bool = True,
    pipeline: bool = True,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload MGA-CLAP model, processor, model card and endpoint handler",
    revision: str | None = None,
) -> CommitInfo:
    """Upload model, processor, remote code, model card and endpoint handler to `repo_id` in one commit.

    The files are written by [`save_for_hub`] to a temporary folder, the repository is created if it does not exist
    (`exist_ok=True`) and the folder is sent with `HfApi.upload_folder`. The endpoint comes from `HF_ENDPOINT`, the
    token from `token`, `HF_TOKEN` or the cached login.

    Args:
        model ([`MGAClapModel`]): the model to upload.
        processor ([`MGAClapProcessor`]): its processor (feature extractor + tokenizer).
        repo_id (`str`): `"user/name"` or `"org/name"`.
        card ([`~huggingface_hub.ModelCard`], *optional*): the card, e.g. from
            [`~transformers_mgaclap.model_card.create_model_card`]; a short default card otherwise.
        handler (`bool`, *optional*, defaults to `True`): include `handler.py` for Inference Endpoints.
        pipeline (`bool`, *optional*, defaults to `True`): make `pipeline("zero-shot-audio-event-detection",
            model=repo_id, trust_remote_code=True)` work from the repository (see [`save_for_hub`]).
        token (`str`, *optional*): a write token.
        private (`bool`, *optional*): visibility of a newly created repository.
        commit_message (`str`, *optional*): the commit title.
        revision (`str`, *optional*): the branch to commit to (default `main`).

    Returns:
        [`~huggingface_hub.CommitInfo`] of the upload commit.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hub(model, processor, tmp, repo_id=repo_id, card=card, handler=handler, pipeline=pipeline)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            repo_type="model",
        )


__all__ = ["custom_pipelines_entry", "default_model_card", "push_model_to_hub", "save_for_hub"]
