"""The contrastive loss over the global batch of all processes.

Every process gathers all processes' embeddings with a gradient-preserving all-gather and computes the same full
`B x B` loss. The gather's backward sums the (identical) gradients of all processes for each process's own rows, i.e.
`world_size` times the global-loss gradient, and DDP divides by `world_size` again when it averages: the parameters
receive exactly the gradient of the global-batch loss, for any loss that couples rows (the hard-negative weights, the
official variant's row-j normaliser).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "input_features",
    "input_features_mask",
    "is_longer",
)


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


__all__ = ["MODEL_INPUTS", "gather_with_grad", "global_contrastive_loss"]
