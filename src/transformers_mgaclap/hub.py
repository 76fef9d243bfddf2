"""Publish an MGA-CLAP model on the Hugging Face Hub: weights, processor, remote code, model card and an
Inference Endpoints handler in one commit.

```python
>>> from transformers_mgaclap.hub import push_model_to_hub
>>> push_model_to_hub(model, processor, "me/mgaclap-htsat", card=card)  # doctest: +SKIP
```
"""

import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi, ModelCard, ModelCardData

from .model_card import TAGS

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


def save_for_hub(
    model,
    processor,
    save_directory: str | Path,
    *,
    repo_id: str,
    card: ModelCard | None = None,
    handler: bool = True,
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

    Returns:
        `list[str]`: the files written, relative to `save_directory`, sorted.
    """
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
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
        save_for_hub(model, processor, tmp, repo_id=repo_id, card=card, handler=handler)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            revision=revision,
            repo_type="model",
        )


__all__ = ["default_model_card", "push_model_to_hub", "save_for_hub"]
