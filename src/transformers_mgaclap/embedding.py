"""One embedding API: audio of any accepted form and texts in, normalised global and local embeddings out.

Used by the evaluation, the TeminAL and few-shot extensions, sound event detection, the endpoint handler and the
demo. It works with MGA-CLAP (clip embeddings plus frames, text embeddings plus word pieces) and with any model whose
`get_audio_features` / `get_text_features` return `pooler_output`, e.g. transformers' `ClapModel` (global embeddings
only, the local fields are then `None`).

`processor` is anything with a `feature_extractor` and a `tokenizer` attribute: a processor, or a pipeline.

This module is copied next to the weights as remote code: it imports only torch, numpy, transformers and flat sibling
modules.
"""

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.utils.logging import tqdm

from .audio_input import AudioInput, load_audio
from .processing_mgaclap import check_texts

DEFAULT_AUDIO_BATCH_SIZE = 32
DEFAULT_TEXT_BATCH_SIZE = 256


@dataclass
class AudioEmbeddings:
    r"""
    Embeddings of a list of clips, on the model's device, float32.

    Args:
        clip_embeds (`torch.FloatTensor` of shape `(num_clips, D)`): L2-normalised global embeddings.
        frame_embeds (`torch.FloatTensor` of shape `(num_clips, T, D)`, *optional*): L2-normalised frame embeddings
            (MGA-CLAP: T = 32 frames of 10/32 s); `None` for models without frames.
        frame_mask (`torch.LongTensor` of shape `(num_clips, T)`, *optional*): 1 on frames of real audio, 0 on
            padding.
    """

    clip_embeds: torch.Tensor
    frame_embeds: torch.Tensor | None = None
    frame_mask: torch.Tensor | None = None


@dataclass
class TextEmbeddings:
    r"""
    Embeddings of a list of texts, on the model's device, float32.

    Args:
        text_embeds (`torch.FloatTensor` of shape `(num_texts, D)`): L2-normalised global embeddings.
        word_embeds (`torch.FloatTensor` of shape `(num_texts, L, D)`, *optional*): L2-normalised word-piece
            embeddings (MGA-CLAP: without [CLS]); `None` for models without them, or when not asked for.
        word_mask (`torch.LongTensor` of shape `(num_texts, L)`, *optional*): 1 on real word pieces, 0 on [SEP] and
            padding.
    """

    text_embeds: torch.Tensor
    word_embeds: torch.Tensor | None = None
    word_mask: torch.Tensor | None = None


def model_device(model) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


def logit_scale(model) -> torch.Tensor:
    """The factor from cosines to logits, with its gradient: `1 / temperature` for MGA-CLAP, `exp(logit_scale_a)`
    for transformers' CLAP."""
    if hasattr(model, "clamped_temperature"):
        return 1.0 / model.clamped_temperature()
    if hasattr(model, "logit_scale_a"):
        return model.logit_scale_a.exp()
    raise TypeError(f"{type(model).__name__} has neither a temperature nor a logit scale.")


def _accepted(
    method, inputs: Mapping[str, Any], device: torch.device, dtype: torch.dtype | None = None
) -> dict:
    """The tensors of `inputs` that `method` takes, on `device` (floating ones cast to `dtype`)."""
    names = inspect.signature(method).parameters
    accepted = {}
    for key, value in inputs.items():
        if key in names and isinstance(value, torch.Tensor):
            value = value.to(device)
            accepted[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return accepted


def _local_embeddings(output) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """MGA-CLAP's projected local embeddings and their mask, or `(None, None)` for models without them."""
    mask = getattr(output, "local_mask", None)
    if mask is None:
        return None, None
    return output.local_embeds, mask


def _padded_cat(chunks: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Concatenate `(n, L_i, ...)` chunks along dim 0, right-padding dim 1 to the longest."""
    longest = max(chunk.shape[1] for chunk in chunks)
    padded = [F.pad(c, (0, 0) * (c.dim() - 2) + (0, longest - c.shape[1]), value=value) for c in chunks]
    return torch.cat(padded)


def _batches(num_items: int, batch_size: int, progress: bool, unit: str):
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    starts = range(0, num_items, batch_size)
    bar = tqdm(total=num_items, unit=unit, desc="Embedding", disable=not progress)
    for start in starts:
        stop = min(start + batch_size, num_items)
        yield start, stop
        bar.update(stop - start)
    bar.close()


def embed_audio(
    model,
    processor,
    audio: Sequence[AudioInput],
    *,
    sampling_rate: int | None = None,
    batch_size: int = DEFAULT_AUDIO_BATCH_SIZE,
    padding_mode: str | None = None,
    truncation_mode: str | None = None,
    with_grad: bool = False,
    progress: bool = False,
) -> AudioEmbeddings:
    """Embed clips: normalised clip embeddings, and for MGA-CLAP normalised frames with their mask.

    Args:
        model: an MGA-CLAP model (or any model with `get_audio_features` returning `pooler_output`).
        processor: anything with a `feature_extractor` (the model's front end).
        audio (`Sequence`): clips in any form of [`~audio_input.load_audio`]: arrays at `sampling_rate`, paths, file
            bytes, `datasets` Audio cells, decoders. Each is resampled to the extractor's rate.
        sampling_rate (`int`, *optional*): the rate of array clips; defaults to the extractor's (files and cells
            carry their own).
        batch_size (`int`, *optional*, defaults to 32): clips per model call.
        padding_mode, truncation_mode (`str`, *optional*): MGA-CLAP extractor modes for this call (e.g. `"zero"`,
            the official zero-shot classification and retrieval padding); default: the extractor's own.
        with_grad (`bool`, *optional*, defaults to `False`): keep the autograd graph (training); otherwise run under
            `torch.no_grad()`.
        progress (`bool`, *optional*, defaults to `False`): a progress bar in clips.

    Returns:
        [`AudioEmbeddings`] on the model's device.
    """
    extractor = processor.feature_extractor
    target_rate = extractor.sampling_rate
    modes = {
        key: value
        for key, value in (("padding_mode", padding_mode), ("truncation_mode", truncation_mode))
        if value
    }
    device = model_device(model)
    dtype = getattr(model, "dtype", None)
    clips, frames, masks = [], [], []
    with contextlib.nullcontext() if with_grad else torch.no_grad():
        for start, stop in _batches(len(audio), batch_size, progress, "clips"):
            waveforms = [
                load_audio(
                    item, sampling_rate, target_rate, f"Clip {start + offset}", default_rate=target_rate
                )[0]
                for offset, item in enumerate(audio[start:stop])
            ]
            inputs = extractor(waveforms, sampling_rate=target_rate, return_tensors="pt", **modes)
            output = model.get_audio_features(**_accepted(model.get_audio_features, inputs, device, dtype))
            clips.append(F.normalize(output.pooler_output.float(), dim=-1))
            local, mask = _local_embeddings(output)
            if local is not None:
                frames.append(F.normalize(local.float(), dim=-1))
                masks.append(mask)
    if not clips:
        raise ValueError("No audio to embed: `audio` is empty.")
    if not frames:
        return AudioEmbeddings(torch.cat(clips))
    return AudioEmbeddings(torch.cat(clips), torch.cat(frames), torch.cat(masks))


def tokenize(model, tokenizer, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenise texts as the model's text tower reads them: MGA-CLAP keeps `config.max_text_length` tokens (30,
    [CLS]/[SEP] included), other models the tokenizer's limit.

    Raises:
        `ValueError`: an empty list, or a text that is not a non-empty string.
    """
    texts = check_texts(texts)
    limit = getattr(getattr(model, "config", None), "max_text_length", None)
    return dict(tokenizer(texts, padding="longest", truncation=True, max_length=limit, return_tensors="pt"))


def embed_text(
    model,
    processor,
    texts: Sequence[str],
    *,
    batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
    return_word_embeds: bool = True,
    with_grad: bool = False,
    progress: bool = False,
) -> TextEmbeddings:
    """Embed captions, class names or phrases: normalised text embeddings, and for MGA-CLAP normalised word pieces.

    Args:
        model: an MGA-CLAP model (or any model with `get_text_features` returning `pooler_output`).
        processor: anything with a `tokenizer`.
        texts (`Sequence[str]`): non-empty strings.
        batch_size (`int`, *optional*, defaults to 256): texts per model call, so that memory is bounded by the
            batch and not by the number of texts.
        return_word_embeds (`bool`, *optional*, defaults to `True`): also keep the word pieces. Classification and
            event detection need only the global embeddings: without the word pieces, what is kept per text is one
            `(D,)` vector, and the working memory is the batch's.
        with_grad (`bool`, *optional*, defaults to `False`): keep the autograd graph.
        progress (`bool`, *optional*, defaults to `False`): a progress bar in texts.

    Returns:
        [`TextEmbeddings`] on the model's device; word pieces are right-padded to the longest text.
    """
    texts = check_texts(texts)
    device = model_device(model)
    pooled, words, masks = [], [], []
    with contextlib.nullcontext() if with_grad else torch.no_grad():
        for start, stop in _batches(len(texts), batch_size, progress, "texts"):
            inputs = tokenize(model, processor.tokenizer, texts[start:stop])
            output = model.get_text_features(**_accepted(model.get_text_features, inputs, device))
            pooled.append(F.normalize(output.pooler_output.float(), dim=-1))
            local, mask = _local_embeddings(output)
            if local is not None and return_word_embeds:
                words.append(F.normalize(local.float(), dim=-1))
                masks.append(mask)
    if not words:
        return TextEmbeddings(torch.cat(pooled))
    return TextEmbeddings(torch.cat(pooled), _padded_cat(words), _padded_cat(masks))


__all__ = [
    "AudioEmbeddings",
    "TextEmbeddings",
    "embed_audio",
    "embed_text",
    "logit_scale",
    "model_device",
    "tokenize",
]
