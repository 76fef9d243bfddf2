"""Convert the official MGA-CLAP release (or the HTS-AT AudioSet checkpoint) into an MGA-CLAP folder.

Usage::

    # the released MGA-CLAP model -> a ready-to-use folder (model, feature extractor, tokenizer, code)
    python -m transformers_mgaclap.hub.convert_original_checkpoint --checkpoint_path model.pt --output_dir mgaclap

    # the HTS-AT AudioSet checkpoint the paper starts from -> a fresh MGA-CLAP folder for pre-training
    python -m transformers_mgaclap.hub.convert_original_checkpoint --audio_checkpoint_path HTSAT.ckpt \\
        --text_model_name_or_path bert-base-uncased --output_dir mgaclap-init

Files are read with `torch.load(weights_only=True)`; only the plain numpy scalar and dtype types that the
official files contain are allow-listed (see `SAFE_GLOBALS`), under both their numpy-1 (`numpy.core...`) and
numpy-2 (`numpy._core...`) names. Nothing else in a pickle is ever executed.

Every official key is either mapped by an explicit rule or dropped by an explicit, documented rule
(`DROP_RULES`); any other key, a target key left without a source, or a shape that does not fit is an error that
names the key (docs/official-implementation.md §11-12).
"""

import argparse
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch
from huggingface_hub import ModelCard
from transformers.utils.logging import tqdm

from ..configuration_mgaclap import MGAClapConfig
from ..modeling_mgaclap import MGAClapModel
from ..utils.cli import HelpFormatter
from .publish import push_model_to_hub, save_for_hub

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------


def _numpy_scalar_function():
    """numpy's `scalar` reconstructor (`numpy._core.multiarray.scalar` in numpy 2, `numpy.core...` in numpy 1)."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


# The official checkpoint's optimizer state holds numpy float scalars (the learning rate), written under numpy 1.
# Plain numeric and boolean dtypes only: no object, string, void or datetime dtypes, no arrays.
_DTYPE_CLASS_NAMES = (
    "BoolDType",
    "Int8DType",
    "Int16DType",
    "Int32DType",
    "Int64DType",
    "UInt8DType",
    "UInt16DType",
    "UInt32DType",
    "UInt64DType",
    "ByteDType",
    "UByteDType",
    "ShortDType",
    "UShortDType",
    "IntDType",
    "UIntDType",
    "LongDType",
    "ULongDType",
    "LongLongDType",
    "ULongLongDType",
    "Float16DType",
    "Float32DType",
    "Float64DType",
    "LongDoubleDType",
    "Complex64DType",
    "Complex128DType",
    "CLongDoubleDType",
)


def _safe_globals() -> list:
    scalar = _numpy_scalar_function()
    safe = [
        (scalar, "numpy.core.multiarray.scalar"),  # numpy-1 spelling: what the released model.pt references
        (scalar, "numpy._core.multiarray.scalar"),  # numpy-2 spelling
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    if dtypes is not None:
        # A dtype is rebuilt by `numpy.dtype(...)` followed by BUILD on the concrete class (e.g. Float64DType).
        safe.extend(getattr(dtypes, name) for name in _DTYPE_CLASS_NAMES if hasattr(dtypes, name))
    return safe


SAFE_GLOBALS = _safe_globals()
"""What `torch.load(weights_only=True)` may construct besides tensors and containers: numpy's scalar
reconstructor (numpy-1 and numpy-2 names), `numpy.dtype` and the plain numeric dtype classes."""


def safe_load_checkpoint(path: str | os.PathLike) -> object:
    """Load a PyTorch checkpoint without executing pickled code.

    `torch.load(map_location="cpu", weights_only=True)` with only [`SAFE_GLOBALS`] allow-listed. A file that
    references any other global (a class instance, `os.system`, ...), or a truncated or corrupt file, raises a
    `ValueError` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Refused to load {path!r}: weights-only unpickling failed ({_unpickling_reason(error)}). The file "
            "references Python objects outside the allow-list of tensors, containers and plain numpy "
            "scalars/dtypes, or is corrupt; it is not an unmodified official checkpoint. Nothing in it was executed."
        ) from error
    except (
        RuntimeError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
    ) as error:
        raise ValueError(
            f"Could not read {path!r}: the file is truncated, corrupt or not a PyTorch checkpoint "
            f"({type(error).__name__}: {_first_lines(error)})"
        ) from error


def _first_lines(error: BaseException, count: int = 6) -> str:
    return " ".join(str(error).strip().splitlines()[:count])


def _unpickling_reason(error: BaseException) -> str:
    """torch's weights-only error without its boilerplate (which suggests `weights_only=False`)."""
    lines = [line.strip() for line in str(error).splitlines()]
    reason = [
        line
        for line in lines
        if line and not line.startswith(("Weights only load failed", "Check the documentation", "(1)", "(2)"))
    ]
    return " ".join(reason[:4]) or type(error).__name__


def _state_dict_of(checkpoint: object, path: str, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    for key in keys:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    else:
        raise ValueError(
            f"{path!r} holds no state dict under {list(keys)} (top-level "
            f"{sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__})."
        )
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path!r}: state-dict entries that are not tensors: {not_tensors[:10]}")
    return dict(state_dict)


def load_original_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of an official MGA-CLAP checkpoint.

    The release is `{"model": state_dict, "optimizer": ..., "config": ..., "epoch": ...}` (docs/official-implementation.md
    §11.1); it is read safely with [`safe_load_checkpoint`].

    Returns:
        `dict[str, torch.Tensor]`: the 415 (or 416, with BERT's `position_ids`) official keys.
    """
    return _state_dict_of(safe_load_checkpoint(path), os.fspath(path), ["model"])


def load_htsat_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The HTS-AT weights of the AudioSet HTS-AT Lightning checkpoint (`{"state_dict": {"sed_model.*": ...}}`).

    Returns:
        `dict[str, torch.Tensor]`: HTS-AT keys with the `sed_model.` prefix stripped (the names of the official
        MGA-CLAP's `audio_encoder.audio_enc.*` keys). A key without the prefix is an error.
    """
    path = os.fspath(path)
    state_dict = _state_dict_of(safe_load_checkpoint(path), path, ["state_dict", "model"])
    foreign = [key for key in state_dict if not key.startswith(HTSAT_LIGHTNING_PREFIX)]
    if foreign:
        raise ValueError(
            f"{path!r}: keys without the {HTSAT_LIGHTNING_PREFIX!r} prefix of an HTS-AT Lightning checkpoint: "
            f"{foreign[:10]}"
        )
    return {key[len(HTSAT_LIGHTNING_PREFIX) :]: value for key, value in state_dict.items()}


# ---------------------------------------------------------------------------------------------------------------
# Key map
# ---------------------------------------------------------------------------------------------------------------

OFFICIAL_AUDIO_PREFIX = "audio_encoder.audio_enc."
OFFICIAL_TEXT_PREFIX = "text_encoder.text_encoder."
HTSAT_LIGHTNING_PREFIX = "sed_model."

DROP_RULES = {
    "front_end": "STFT / mel filter weights of the official front end (`audio_feats_extractor.*`, or "
    "`spectrogram_extractor.*` / `logmel_extractor.*` in the HTS-AT release): fixed DFT and Slaney mel "
    "matrices, recomputed by MGAClapFeatureExtractor.",
    "clip_head": "`tscam_conv.*` / `head.*`: the AudioSet clip-classification path of HTS-AT, unused by "
    "MGA-CLAP (docs/official-implementation.md §3.5).",
    "attn_mask": "`*.attn_mask`: shifted-window masks, a deterministic buffer recomputed by the Swin blocks.",
    "position_ids": "BERT's `embeddings.position_ids` (transformers 4.24 saved it): a non-persistent buffer now.",
    "locality_aware_query_key": "query / key rows (0:C, C:2C) of `attn.qkv` in a locality-aware block: the "
    "official forward uses only the value rows (docs/official-implementation.md §4.1, §4.4).",
    "locality_aware_position_bias": "`attn.relative_position_bias_table` / `relative_position_index` of a "
    "locality-aware block: no query-key attention, so no position bias (§4.4).",
    "locality_aware_mlp": "`mlp.fc1` / `mlp.fc2` of a locality-aware block: the official code removes the MLP "
    "and keeps `norm2` as a residual term (§4.1, §4.4).",
}
"""Every official key that is not carried over, by rule. Nothing else may be dropped."""

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {
    "norm1.": "layernorm_before.",
    "attn.proj.": "attention.output.dense.",
    "norm2.": "layernorm_after.",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
    "attn.relative_position_bias_table": "attention.self.relative_position_bias_table",
    "attn.relative_position_index": "attention.self.relative_position_index",
}
_QKV = re.compile(r"^attn\.qkv\.(weight|bias)$")
_STEM = re.compile(
    r"^(patch_embed\.proj\.(weight|bias)|patch_embed\.norm\.(weight|bias)"
    r"|layers\.\d+\.downsample\.(reduction\.weight|norm\.(weight|bias))|norm\.(weight|bias))$"
)
_BN0 = re.compile(r"^bn0\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_PROJECTION = re.compile(r"^(frame_proj|word_proj)\.([0134])\.(weight|bias)$")


@dataclass(frozen=True)
class _Target:
    """One target tensor: `name` gets the whole source, or with `part` set that third of a fused qkv's rows."""

    name: str
    part: int | None = None  # 0 = query, 1 = key, 2 = value rows of attn.qkv


def locality_aware_blocks(config: MGAClapConfig) -> set[tuple[int, int]]:
    """`(stage, block)` indices of the audio blocks that `config` turns into locality-aware blocks (the last ones)."""
    blocks = [
        (stage, index) for stage, depth in enumerate(config.audio_config.depths) for index in range(depth)
    ]
    return (
        set(blocks[len(blocks) - config.num_locality_aware_blocks :])
        if config.num_locality_aware_blocks
        else set()
    )


def map_htsat_key(key: str, locality_aware: set[tuple[int, int]]) -> list[_Target] | str | None:
    """Map one HTS-AT key (official names, without prefix) to `audio_encoder.*` targets.

    Returns the list of targets, the name of the [`DROP_RULES`] entry that drops it entirely, or `None` for an
    unknown key. Partly dropped keys (the qkv of a locality-aware block) return only the kept targets.
    """
    if key.startswith(("audio_feats_extractor.", "spectrogram_extractor.", "logmel_extractor.")):
        return "front_end"
    if key.startswith(("tscam_conv.", "head.")):
        return "clip_head"
    if _BN0.match(key):
        return [_Target("audio_encoder.batch_norm." + key[len("bn0.") :])]
    if _STEM.match(key):
        return [_Target("audio_encoder." + key)]
    block = _BLOCK.match(key)
    if block is None:
        return None
    stage, index, rest = int(block.group(1)), int(block.group(2)), block.group(3)
    prefix = f"audio_encoder.layers.{stage}.blocks.{index}."
    replaced = (stage, index) in locality_aware
    if rest == "attn_mask":
        return "attn_mask"
    qkv = _QKV.match(rest)
    if qkv:
        kind = qkv.group(1)
        parts = [2] if replaced else [0, 1, 2]
        names = ("query", "key", "value")
        return [_Target(f"{prefix}attention.self.{names[part]}.{kind}", part) for part in parts]
    if replaced and rest in ("attn.relative_position_bias_table", "attn.relative_position_index"):
        return "locality_aware_position_bias"
    if replaced and rest in ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
        return "locality_aware_mlp"
    for old, new in _BLOCK_RENAMES.items():
        if rest == old or (
            old.endswith(".") and rest.startswith(old) and rest[len(old) :] in ("weight", "bias")
        ):
            return [_Target(prefix + new + rest[len(old) :])]
    return None


def map_official_key(key: str, locality_aware: set[tuple[int, int]]) -> list[_Target] | str | None:
    """Map one key of the official MGA-CLAP state dict (see [`map_htsat_key`] for the return value)."""
    if key == "temp":
        return [_Target("temperature")]  # raw temperature, as the official `temp` (not log-parameterised)
    if key == "codebook":
        return [_Target("codebook.codewords")]
    projection = _PROJECTION.match(key)
    if projection:
        head = "audio_projection" if projection.group(1) == "frame_proj" else "text_projection"
        return [_Target(f"{head}.{projection.group(2)}.{projection.group(3)}")]
    if key.startswith(OFFICIAL_TEXT_PREFIX):
        rest = key[len(OFFICIAL_TEXT_PREFIX) :]
        if rest == "embeddings.position_ids":
            return "position_ids"
        if rest.startswith(("embeddings.", "encoder.layer.")):
            return [_Target("text_model." + rest)]
        return None
    if key.startswith(OFFICIAL_AUDIO_PREFIX):
        return map_htsat_key(key[len(OFFICIAL_AUDIO_PREFIX) :], locality_aware)
    return None


def _target_spec(config: MGAClapConfig, prefix: str = "") -> dict[str, torch.Tensor]:
    """State-dict entries (on the meta device: names, shapes, dtypes) of `MGAClapModel(config)` under `prefix`."""
    with torch.device("meta"):
        model = MGAClapModel(config)
    return {key: value for key, value in model.state_dict().items() if key.startswith(prefix)}


def _convert(
    source: Mapping[str, torch.Tensor],
    config: MGAClapConfig,
    mapper,
    target_prefix: str,
    what: str,
    dropped: dict[str, str] | None,
) -> dict[str, torch.Tensor]:
    spec = _target_spec(config, target_prefix)
    locality_aware = locality_aware_blocks(config)
    converted: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    drops: dict[str, str] = {}
    for key, tensor in source.items():
        targets = mapper(key, locality_aware)
        if targets is None:
            problems.append(f"unexpected {what} key {key!r} {tuple(tensor.shape)}: no conversion rule for it")
            continue
        if isinstance(targets, str):
            drops[key] = targets
            continue
        if targets[0].part is not None and len(targets) < 3:
            drops[key] = "locality_aware_query_key"  # partly: its value rows are kept
        for target in targets:
            if target.name not in spec:
                problems.append(
                    f"{what} key {key!r} maps to {target.name!r}, which MGAClapModel with this configuration does "
                    "not have (different geometry?)"
                )
                continue
            expected = spec[target.name]
            expected_shape = tuple(expected.shape)
            if target.part is not None:  # fused qkv: three (C, C) / (C,) blocks stacked along dim 0
                expected_shape = (3 * expected_shape[0], *expected_shape[1:])
            if tuple(tensor.shape) != expected_shape:
                problems.append(
                    f"{what} key {key!r} has shape {tuple(tensor.shape)}, expected {expected_shape} "
                    f"(for {target.name!r})"
                )
                continue
            if tensor.is_floating_point() != expected.is_floating_point():
                problems.append(f"{what} key {key!r} has dtype {tensor.dtype}, expected {expected.dtype}")
                continue
            value = tensor
            if target.part is not None:
                rows = expected.shape[0]
                value = tensor[target.part * rows : (target.part + 1) * rows]
            if target.name in converted:
                problems.append(
                    f"{what} key {key!r} maps to {target.name!r}, which another key already filled"
                )
            converted[target.name] = value.contiguous()
    missing = [name for name in spec if name not in converted]
    problems.extend(f"missing {what} key: nothing maps to target {name!r}" for name in missing)
    if problems:
        shown = "\n  ".join(problems[:30]) + (
            f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        )
        raise ValueError(f"Cannot convert the {what} state dict ({len(problems)} problems):\n  {shown}")
    if dropped is not None:
        dropped.update(drops)
    counts: dict[str, int] = {}
    for rule in drops.values():
        counts[rule] = counts.get(rule, 0) + 1
    logger.info(
        f"Converted {len(converted)} tensors from {len(source)} {what} keys; dropped by rule: {counts}"
    )
    return converted


def convert_state_dict(
    official_state_dict: Mapping[str, torch.Tensor],
    config: MGAClapConfig | None = None,
    dropped: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an official MGA-CLAP state dict onto the keys of `MGAClapModel(config)`.

    Rules (docs/official-implementation.md §12.1): `audio_encoder.audio_enc.` -> `audio_encoder.` (`bn0` ->
    `batch_norm`, `norm1` -> `layernorm_before`, `attn.qkv` split into `attention.self.{query,key,value}` rows
    0:C / C:2C / 2C:3C, `attn.proj` -> `attention.output.dense`, `norm2` -> `layernorm_after`, `mlp.fc1` ->
    `intermediate.dense`, `mlp.fc2` -> `output.dense`, relative position table / index under
    `attention.self.`, patch embedding, downsampling and final `norm` unchanged); `text_encoder.text_encoder.` ->
    `text_model.`; `frame_proj.` -> `audio_projection.`; `word_proj.` -> `text_projection.`; `codebook` ->
    `codebook.codewords`; `temp` -> `temperature`. Keys dropped are those of [`DROP_RULES`].

    Args:
        official_state_dict: the official keys (tensors; meta tensors work for a dry run).
        config: the target configuration; defaults to `MGAClapConfig()` (the paper's model).
        dropped: if given, filled with `{official key: DROP_RULES name}` for every key dropped (wholly or, for
            the qkv of a locality-aware block, its query/key rows).

    Returns:
        `dict[str, torch.Tensor]`: exactly the state-dict keys of `MGAClapModel(config)`.

    Raises:
        `ValueError`: naming every unknown official key, target key left missing and shape that does not fit.
    """
    return _convert(official_state_dict, config or MGAClapConfig(), map_official_key, "", "official", dropped)


def convert_htsat_state_dict(
    htsat_state_dict: Mapping[str, torch.Tensor],
    config: MGAClapConfig | None = None,
    dropped: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Map HTS-AT keys (official names, no prefix) onto the `audio_encoder.*` keys of `MGAClapModel(config)`.

    The same HTS-AT rules and drops as [`convert_state_dict`]. Returns exactly the model's `audio_encoder.*` keys
    (prefix included); raises a `ValueError` naming unknown, missing or misshaped keys.
    """
    return _convert(
        htsat_state_dict, config or MGAClapConfig(), map_htsat_key, "audio_encoder.", "HTS-AT", dropped
    )


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------


def _stage_bar(push_to_hub: str | None, progress: bool) -> tqdm:
    """A bar over a conversion's stages (read, map, save, push): reading and writing hundreds of MB take a while."""
    return tqdm(total=4 if push_to_hub else 3, desc="Converting", unit="steps", disable=not progress)


@contextmanager
def _stage(bar: tqdm, name: str) -> Iterator[None]:
    """Name the running stage on `bar`, and count it when it is done."""
    bar.set_postfix_str(name)
    yield
    bar.update()


def _publish(
    model: MGAClapModel,
    output_dir: str,
    tokenizer_name_or_path: str,
    card: ModelCard | None,
    push_to_hub: str | None,
    token: str | None,
    private: bool | None,
    bar: tqdm,
) -> None:
    """Write the folder through the package's one publish path and, with `push_to_hub`, upload the same files."""
    from transformers import AutoTokenizer

    from ..feature_extraction_mgaclap import MGAClapFeatureExtractor
    from ..processing_mgaclap import MGAClapProcessor

    with _stage(bar, f"saving {output_dir}"):
        processor = MGAClapProcessor(
            MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tokenizer_name_or_path)
        )
        repo_id = push_to_hub or os.path.basename(os.path.abspath(output_dir))
        save_for_hub(model, processor, output_dir, repo_id=repo_id, card=card)
    logger.info(f"Saved {output_dir}")
    if push_to_hub:
        with _stage(bar, f"pushing to {push_to_hub}"):
            push_model_to_hub(model, processor, push_to_hub, card=card, token=token, private=private)
        logger.info(f"Pushed to {push_to_hub}")


def convert(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    tokenizer_name_or_path: str = "bert-base-uncased",
    push_to_hub: str | None = None,
    config: MGAClapConfig | None = None,
    token: str | None = None,
    private: bool | None = None,
    progress: bool = False,
) -> MGAClapModel:
    """Convert the official MGA-CLAP release into a published folder (model, processor, code, pipeline, endpoint
    handler and the official model card), loadable with `AutoModel` / `AutoProcessor` / `pipeline`.

    Args:
        checkpoint_path: the official `model.pt` (`{"model": state_dict, ...}`), read safely.
        output_dir: the folder to write ([`~transformers_mgaclap.hub.save_for_hub`]).
        tokenizer_name_or_path: the BERT tokenizer to save with the model (official: `bert-base-uncased`).
        push_to_hub: a Hub repository id to upload the same files to.
        config: the target configuration; defaults to `MGAClapConfig()`, the paper's (and release's) geometry.
        token, private: the Hub token and the visibility of a newly created repository.
        progress: a progress bar over the stages (read, map, save, push) on stderr.

    Returns:
        [`MGAClapModel`]: the converted model, in eval mode.
    """
    config = config or MGAClapConfig()
    with _stage_bar(push_to_hub, progress) as bar:
        with _stage(bar, f"reading {os.fspath(checkpoint_path)}"):
            checkpoint = load_original_checkpoint(checkpoint_path)
        with _stage(bar, "mapping the official keys"):
            model = MGAClapModel(config)
            model.load_state_dict(convert_state_dict(checkpoint, config), strict=True)
            model.eval()
        card = ModelCard(
            (files("transformers_mgaclap.model_cards") / "official_mgaclap" / "README.md").read_text()
        )
        _publish(model, os.fspath(output_dir), tokenizer_name_or_path, card, push_to_hub, token, private, bar)
    return model


def convert_audio_checkpoint(
    audio_checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    text_model_name_or_path: str | None = None,
    tokenizer_name_or_path: str | None = None,
    push_to_hub: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    progress: bool = False,
    **config_kwargs,
) -> MGAClapModel:
    """A fresh MGA-CLAP for pre-training, its audio tower taken from the AudioSet HTS-AT Lightning checkpoint.

    As the official pre-training (docs/official-implementation.md §3): HTS-AT weights from `HTSAT.ckpt`
    (`sed_model.` prefix), the text tower from `text_model_name_or_path` (random `bert-base` geometry if `None`),
    projection heads, codebook and temperature freshly initialised. Unlike the official `strict=False` load, every
    audio key is accounted for by the rules of [`convert_htsat_state_dict`].

    Args:
        audio_checkpoint_path: the HTS-AT AudioSet checkpoint (`{"state_dict": {"sed_model.*": ...}}`).
        output_dir: the folder to write ([`~transformers_mgaclap.hub.save_for_hub`], with a default card).
        text_model_name_or_path: a BERT-family encoder (Hub id or folder).
        tokenizer_name_or_path: defaults to `text_model_name_or_path`, else `bert-base-uncased`.
        push_to_hub: a Hub repository id to upload the same files to.
        token, private: the Hub token and the visibility of a newly created repository.
        progress: a progress bar over the stages (read, map, save, push) on stderr.
        config_kwargs: other [`MGAClapConfig`] fields (e.g. `audio_config` for a non-default geometry).
    """
    from ..training.model import build_model

    with _stage_bar(push_to_hub, progress) as bar:
        with _stage(bar, f"reading {os.fspath(audio_checkpoint_path)}"):
            htsat = load_htsat_checkpoint(audio_checkpoint_path)
        with _stage(bar, "mapping the HTS-AT keys"):
            model = build_model(text_model_name_or_path=text_model_name_or_path, **config_kwargs)
            audio_state = convert_htsat_state_dict(htsat, model.config)
            model.audio_encoder.load_state_dict(
                {key[len("audio_encoder.") :]: value for key, value in audio_state.items()}, strict=True
            )
            model.eval()
        tokenizer = tokenizer_name_or_path or text_model_name_or_path or "bert-base-uncased"
        _publish(model, os.fspath(output_dir), tokenizer, None, push_to_hub, token, private, bar)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint_path", help="The official MGA-CLAP release (model.pt); this or --audio_checkpoint_path."
    )
    source.add_argument(
        "--audio_checkpoint_path",
        help="The HTS-AT AudioSet Lightning checkpoint (HTSAT.ckpt): writes a fresh MGA-CLAP for pre-training.",
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write the converted model to.")
    parser.add_argument(
        "--tokenizer_name_or_path",
        default=None,
        help="BERT tokenizer to save (default: bert-base-uncased, or --text_model_name_or_path).",
    )
    parser.add_argument(
        "--text_model_name_or_path",
        default=None,
        help="With --audio_checkpoint_path: the pre-trained text encoder (default: random bert-base geometry).",
    )
    parser.add_argument(
        "--push_to_hub",
        default=None,
        metavar="REPO",
        help="Also upload the folder to this Hub repository. Default: none, the folder only.",
    )
    parser.add_argument(
        "--hub_token", default=None, help="Hub write token (default: HF_TOKEN or the cached login)."
    )
    parser.add_argument(
        "--hub_private_repo", action="store_true", help="Create the Hub repository as private (if it is new)."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hub = {
        "push_to_hub": args.push_to_hub,
        "token": args.hub_token,
        "private": args.hub_private_repo or None,
        "progress": True,
    }
    if args.checkpoint_path:
        if args.text_model_name_or_path:
            parser.error("--text_model_name_or_path only applies to --audio_checkpoint_path.")
        tokenizer = args.tokenizer_name_or_path or "bert-base-uncased"
        convert(args.checkpoint_path, args.output_dir, tokenizer_name_or_path=tokenizer, **hub)
    else:
        convert_audio_checkpoint(
            args.audio_checkpoint_path,
            args.output_dir,
            text_model_name_or_path=args.text_model_name_or_path,
            tokenizer_name_or_path=args.tokenizer_name_or_path,
            **hub,
        )


if __name__ == "__main__":
    main()
