"""Training helpers: building a model from pre-trained towers, the global-batch loss step, retrieval recall.

The contrastive loss is computed over the global batch: every process gathers all processes' embeddings with a
gradient-preserving all-gather and computes the same full `B x B` loss. The gather's backward sums the (identical)
gradients of all processes for each process's own rows, i.e. `world_size` times the global-loss gradient, and DDP
divides by `world_size` again when it averages: the parameters receive exactly the gradient of the global-batch
loss, for any loss that couples rows (the hard-negative weights, the official variant's row-j normaliser).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .configuration_mgaclap import MGAClapConfig
from .modeling_mgaclap import MGAClapModel

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "input_features",
    "input_features_mask",
    "is_longer",
)
# Parameters a fused audio tower has and an unfused HTS-AT checkpoint lacks (LAION-CLAP's fusion layers).
FUSION_PREFIXES = ("patch_embed.mel_conv2d.", "patch_embed.fusion_model.")


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (local rows) from every process along dim 0, keeping the autograd graph.

    Processes may hold different numbers of rows (a skipped corrupt file): rows are padded to the largest count
    for the collective and the padding is dropped afterwards. Without an initialised process group this is the
    identity.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed._functional_collectives import all_gather_single

    sizes = [torch.zeros((), dtype=torch.long, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(tensor.shape[0], device=tensor.device))
    sizes = [int(s) for s in sizes]
    largest = max(sizes)
    padded = F.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, largest - tensor.shape[0]))
    gathered = all_gather_single(padded.contiguous(), 0, dist.group.WORLD)  # (world * largest, ...)
    return torch.cat([gathered[rank * largest : rank * largest + size] for rank, size in enumerate(sizes)])


def global_contrastive_loss(model, batch: dict) -> tuple[torch.Tensor, object]:
    """Forward the local batch, gather the global embeddings and return `(global loss, local outputs)`.

    `model` may be wrapped (DDP, `accelerator.prepare`); the loss configuration and temperature come from the
    unwrapped [`MGAClapModel`].
    """
    outputs = model(**{key: batch[key] for key in MODEL_INPUTS if key in batch})
    unwrapped = model.module if hasattr(model, "module") else model
    audio_embeds = gather_with_grad(outputs.audio_embeds)
    text_embeds = gather_with_grad(outputs.text_embeds)
    return unwrapped.contrastive_loss(audio_embeds, text_embeds), outputs


def retrieval_recall(
    audio_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_audio: torch.Tensor, ks=(1, 5, 10)
) -> dict[str, float]:
    """Recall@k of text-to-audio and audio-to-text retrieval (several captions per clip allowed).

    Text-to-audio: each caption queries every clip; a hit is its own clip within the top k. Audio-to-text: each
    clip queries every caption; a hit is any of its captions within the top k (the best-ranked one counts), the
    official convention.

    Args:
        audio_embeds (`torch.Tensor` of shape `(num_clips, D)`): normalised.
        text_embeds (`torch.Tensor` of shape `(num_captions, D)`): normalised.
        text_to_audio (`torch.LongTensor` of shape `(num_captions,)`): the clip of each caption.
    """
    similarity = text_embeds.float() @ audio_embeds.float().t()  # (captions, clips)
    # 0-based rank of the right clip for each caption: how many clips score strictly higher.
    t2a_rank = (similarity > similarity.gather(1, text_to_audio[:, None])).sum(1)
    # A clip's best-ranked caption is its highest-scoring one: count the captions scoring strictly higher.
    per_clip = similarity.t()  # (clips, captions)
    own = text_to_audio[None, :] == torch.arange(per_clip.shape[0], device=per_clip.device)[:, None]
    best = per_clip.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
    a2t_rank = (per_clip > best).sum(1)
    metrics = {}
    for k in ks:
        metrics[f"t2a_R@{k}"] = (t2a_rank < k).float().mean().item()
        metrics[f"a2t_R@{k}"] = (a2t_rank < k).float().mean().item()
    return metrics


def build_model(
    text_model_name_or_path: str | None = None,
    audio_model_name_or_path: str | None = None,
    **config_kwargs,
) -> MGAClapModel:
    """An [`MGAClapModel`] with pre-trained towers where given, the rest initialised as the paper.

    Args:
        text_model_name_or_path (`str`, *optional*): a BERT-family encoder (Hub id or folder); its configuration
            becomes `text_config` and its weights load into the text tower.
        audio_model_name_or_path (`str`, *optional*): a transformers `ClapModel` / `ClapAudioModel` folder or repo
            (HTS-AT without fusion), or an MGA-CLAP folder; its audio configuration and encoder weights are used.
        config_kwargs: any other [`MGAClapConfig`] field (ablation switches, `codebook_size`, `enable_fusion`: the
            fusion layers are then freshly initialised on top of the unfused audio checkpoint, ...).
    """
    from transformers import AutoConfig, BertModel

    if text_model_name_or_path is not None:
        config_kwargs["text_config"] = AutoConfig.from_pretrained(text_model_name_or_path).to_dict()
    audio_state = None
    if audio_model_name_or_path is not None:
        audio_config, audio_state = _audio_tower(audio_model_name_or_path)
        config_kwargs["audio_config"] = audio_config
    model = MGAClapModel(MGAClapConfig(**config_kwargs))
    if text_model_name_or_path is not None:
        text_state = BertModel.from_pretrained(text_model_name_or_path).state_dict()
        model.text_model.load_state_dict({k: v for k, v in text_state.items() if not k.startswith("pooler.")})
    if audio_state is not None:
        # Keys of the replaced blocks' query, key, position bias and MLP are unused by locality-aware blocks.
        result = model.audio_encoder.load_state_dict(audio_state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(FUSION_PREFIXES)]
        if missing or (result.missing_keys and not model.config.enable_fusion):
            raise ValueError(
                f"Audio checkpoint {audio_model_name_or_path!r} lacks {(missing or result.missing_keys)[:5]} ..."
            )
    return model


def _audio_tower(name_or_path: str) -> tuple[dict, dict]:
    """(audio config dict, audio encoder state dict) of a CLAP or MGA-CLAP checkpoint."""
    from transformers import AutoConfig, AutoModel, ClapAudioModel, ClapModel

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    if config.model_type == "clap":
        model, prefix = ClapModel.from_pretrained(name_or_path), "audio_model.audio_encoder."
        audio_config = config.audio_config
    elif config.model_type == "clap_audio_model":
        model, prefix = ClapAudioModel.from_pretrained(name_or_path), "audio_encoder."
        audio_config = config
    elif config.model_type == MGAClapConfig.model_type:
        model, prefix = AutoModel.from_pretrained(name_or_path), "audio_encoder."
        audio_config = config.audio_config
    else:
        raise ValueError(
            f"{name_or_path!r} is a {config.model_type!r} model: expected a CLAP or MGA-CLAP checkpoint."
        )
    if audio_config.enable_fusion:
        raise ValueError(
            f"{name_or_path!r} uses feature fusion; start from an unfused HTS-AT (`--enable_fusion` adds the fusion "
            "layers, freshly initialised)."
        )
    state = {k[len(prefix) :]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    return audio_config.to_dict(), state


__all__ = ["build_model", "gather_with_grad", "global_contrastive_loss", "retrieval_recall"]
