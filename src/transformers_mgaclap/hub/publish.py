"""Publish an MGA-CLAP model: the one path of every door (`save_for_hub` writes a folder, `push_model_to_hub`
uploads one), used by `examples/pretrain.py --push_to_hub`, the checkpoint converter and the API.

A published folder holds:

- the model (`config.json` with `auto_map` and `custom_pipelines`, `model.safetensors`) and the processor
  (`processor_config.json`, tokenizer files), with their remote code;
- the `zero-shot-audio-event-detection` pipeline's code, so that `pipeline("zero-shot-audio-event-detection",
  model=repo_id, trust_remote_code=True)` works where the package is not installed;
- `handler.py` and `requirements.txt` for Inference Endpoints (the handler's code, `endpoint_handler.py`, is copied
  as remote code too);
- `README.md`, the model card, and the files it shows (`files`: e.g. the frame-similarity picture that
  `examples/pretrain.py` makes for a model trained on the synthetic soundscapes).

```python
>>> from transformers_mgaclap.hub import push_model_to_hub
>>> push_model_to_hub(model, processor, "me/mgaclap-htsat", card=card)  # doctest: +SKIP
```
"""

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData
from transformers import AutoModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from ..endpoint_handler import MGAClapEndpointHandler
from ..pipeline_mgaclap import TASK, MGAClapZeroShotAudioEventDetectionPipeline
from .model_card import PIPELINE_TAG, TAGS

ENDPOINT_ENTRY = Path(__file__).with_name("endpoint_entry.py")
# What an Inference Endpoint installs on top of its image's torch and transformers: soundfile decodes audio files
# when torchcodec (and FFmpeg) is not there.
ENDPOINT_REQUIREMENTS = "transformers>=5.23,<6\nsoundfile>=0.12\n"
# Markdown images `![alt](target)`: the target up to the first space or closing parenthesis (a title may follow).
CARD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)")

DEFAULT_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

An MGA-CLAP model (multi-grained contrastive language-audio pre-training, arXiv 2408.07919) packaged with
transformers-mgaclap. It embeds audio and text into one space and scores text queries frame by frame.

## How to get started

```python
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{{ repo_id }}", trust_remote_code=True)
detector = pipeline("zero-shot-audio-event-detection", model="{{ repo_id }}", trust_remote_code=True)
```

`handler.py` serves the model on Inference Endpoints (zero-shot classification, audio / text embeddings, event
detection on recordings of any length).
"""


def default_model_card(repo_id: str) -> ModelCard:
    """A short card with the Hub metadata MGA-CLAP repositories need (library, pipeline tag, tags)."""
    card_data = ModelCardData(
        language="en", library_name="transformers", pipeline_tag=PIPELINE_TAG, tags=list(TAGS)
    )
    return ModelCard.from_template(
        card_data, template_str=DEFAULT_CARD_TEMPLATE, model_name=repo_id.split("/")[-1], repo_id=repo_id
    )


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """The `custom_pipelines` value of `config.json` for the `zero-shot-audio-event-detection` task.

    Built from the task's registration (done when `transformers_mgaclap` is imported) exactly as
    `Pipeline.save_pretrained` serialises it, so a repository published here and a folder saved by a pipeline agree.

    Returns:
        `dict`: `{"zero-shot-audio-event-detection": {"impl": "pipeline_mgaclap.MGAClap...Pipeline",
        "pt": ["AutoModel"], "type": "multimodal"}}`.
    """
    pipeline_class = MGAClapZeroShotAudioEventDetectionPipeline
    # The registry holds classes; the config holds "<flat module>.<class>" names, the way the remote-code loader
    # resolves them inside the repository.
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
    custom_object_save(MGAClapZeroShotAudioEventDetectionPipeline, folder)  # + the flat modules it imports


def _copy_files(files: Mapping[str, str | Path], folder: Path) -> None:
    """Copy `{name in folder: source}` into `folder`; a source already at its place stays as it is."""
    for name, source in files.items():
        target = folder / name
        if Path(source).resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _local_images(card_text: str) -> list[str]:
    """The images a card shows by a path inside its repository (not by a URL)."""
    return [t for t in CARD_IMAGE.findall(card_text) if "://" not in t and not t.startswith("data:")]


def save_for_hub(
    model,
    processor,
    save_directory: str | Path,
    *,
    repo_id: str,
    card: ModelCard | None = None,
    files: Mapping[str, str | Path] | None = None,
) -> list[str]:
    """Write everything a published MGA-CLAP repository holds (see the module docstring) into `save_directory`.

    Args:
        model ([`MGAClapModel`]): saved with `save_pretrained` (unwrap it first when it is wrapped for training).
        processor ([`MGAClapProcessor`]): saved with `save_pretrained`.
        save_directory: the target folder (created if needed).
        repo_id (`str`): where the model will live; used by the default card's usage snippet.
        card ([`~huggingface_hub.ModelCard`], *optional*): written as `README.md`; missing `library_name` /
            `pipeline_tag` are filled in. Defaults to [`default_model_card`].
        files (`Mapping[str, str | Path]`, *optional*): more files to publish, `{path in the folder: source file}`,
            e.g. the pictures the card shows.

    Returns:
        `list[str]`: the files of `save_directory`, relative to it, sorted.

    Raises:
        ValueError: the card shows a picture by a relative path that is not in the folder (it would be a broken
            image on the Hub).
    """
    folder = Path(save_directory)
    files = dict(files or {})
    card = card if card is not None else default_model_card(repo_id)
    # Checked before anything is written: a picture missing here would be a broken image on the Hub.
    missing = [t for t in _local_images(card.text) if t not in files and not (folder / t).is_file()]
    if missing:
        raise ValueError(f"The model card shows {missing}, which are not in {folder}: pass them in `files`.")
    folder.mkdir(parents=True, exist_ok=True)
    _save_model_with_pipeline(model, folder)
    processor.save_pretrained(folder)
    custom_object_save(MGAClapEndpointHandler, folder)  # endpoint_handler.py + the flat modules it imports
    shutil.copyfile(ENDPOINT_ENTRY, folder / "handler.py")
    (folder / "requirements.txt").write_text(ENDPOINT_REQUIREMENTS)
    _copy_files(files, folder)
    if getattr(card.data, "library_name", None) is None:
        card.data.library_name = "transformers"
    if getattr(card.data, "pipeline_tag", None) is None:
        card.data.pipeline_tag = PIPELINE_TAG
    card.save(folder / "README.md")
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def push_model_to_hub(
    model,
    processor,
    repo_id: str,
    *,
    card: ModelCard | None = None,
    files: Mapping[str, str | Path] | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload MGA-CLAP model, processor, code, model card and endpoint handler",
    revision: str | None = None,
) -> CommitInfo:
    """Publish `model` and `processor` to `repo_id` in one commit (the folder of [`save_for_hub`]).

    The repository is created if it does not exist (`exist_ok=True`). The endpoint comes from `HF_ENDPOINT`, the
    token from `token`, `HF_TOKEN` or the cached login.

    Args:
        model ([`MGAClapModel`]): the model to upload (unwrapped).
        processor ([`MGAClapProcessor`]): its processor (feature extractor + tokenizer).
        repo_id (`str`): `"user/name"` or `"org/name"`.
        card ([`~huggingface_hub.ModelCard`], *optional*): the card, e.g. from
            [`~transformers_mgaclap.hub.model_card.create_model_card`]; a short default card otherwise.
        files (`Mapping[str, str | Path]`, *optional*): more files to upload, as in [`save_for_hub`].
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
        save_for_hub(model, processor, tmp, repo_id=repo_id, card=card, files=files)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            repo_type="model",
        )


__all__ = [
    "custom_pipelines_entry",
    "default_model_card",
    "push_model_to_hub",
    "save_for_hub",
]
