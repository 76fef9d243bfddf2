"""Few-shot audio recognition: episodes, Sinkhorn OT, Tip-Adapter, Treff adapter and a multi-grained cache.

The multi-grained method reconstructs Zhao et al., "Multi-grained Correspondence Learning of Audio-language Models
for Few-shot Audio Recognition" (ACM MM 2024; no public code): a key-value cache at two grains (clip embeddings,
frame-embedding sets of the supports) blended with zero-shot text logits at two grains, fine grains matched by
entropic optimal transport (PLOT, ICLR 2023). Its composition and hyper-parameters are **not** the paper's
(docs/reconstructions.md §4.4); every one is a [`FewShotConfig`] field. The baselines follow their code:
Tip-Adapter (Zhang et al., ECCV 2022, `gaopengcuhk/Tip-Adapter`) and the Treff adapter (Liang et al.,
INTERSPEECH 2023, `JinhuaLiang/lam4fsl`).

Reading order: episodes -> Sinkhorn and OT similarity -> features (computed once per dataset, the model is frozen)
-> classifiers (zero-shot, Tip-Adapter, Treff, multi-grained, trainable multi-grained) -> the episodic protocol.
All logits are `(num_queries, num_classes)` over the episode's classes in [`Episode.classes`] order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils.logging import tqdm

from ..embedding import embed_audio, embed_text, logit_scale
from ..evaluation.report import mean_confidence_interval

# ---------------------------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One N-way K-shot task. Indices point into the dataset; labels are positions in `classes` (0 .. N - 1).

    Attributes:
        classes (`np.ndarray` of shape `(N,)`): dataset class indices of the episode, sorted.
        support (`np.ndarray` of shape `(N * K,)`), support_labels (`np.ndarray` of shape `(N * K,)`).
        query (`np.ndarray` of shape `(N * Q,)`), query_labels (`np.ndarray` of shape `(N * Q,)`).
    """

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def fixed_class_splits(
    num_classes: int, num_splits: int = 5, n_way: int = 15, seed: int = 0
) -> list[list[int]]:
    """`num_splits` fixed "novel" class sets of `n_way` classes each (sorted), deterministic per seed.

    The ESC-50 protocol of the Treff adapter uses 5 fixed 15-class splits whose lists are not reproduced here:
    split `s` is the first `n_way` classes of a permutation drawn from `(seed, s)`.
    """
    if n_way > num_classes:
        raise ValueError(f"n_way ({n_way}) exceeds the number of classes ({num_classes}).")
    return [
        sorted(np.random.default_rng([seed, split]).permutation(num_classes)[:n_way].tolist())
        for split in range(num_splits)
    ]


def sample_episode(
    labels: Sequence[int],
    classes: Sequence[int],
    k_shot: int,
    n_query: int,
    seed: int,
    episode_index: int,
    n_way: int | None = None,
) -> Episode:
    """Draw episode `episode_index` of a run: a function of `(seed, episode_index)` and the arguments only.

    `n_way` classes are drawn from `classes` (all of them by default); for each, `k_shot + n_query` distinct clips
    are drawn without replacement, the first `k_shot` are supports and the rest queries, so no clip is both.

    Raises:
        ValueError: a class has fewer than `k_shot + n_query` clips.
    """
    rng = np.random.default_rng([seed, episode_index])
    labels = np.asarray(labels)
    pool = np.asarray(sorted(classes))
    chosen = np.sort(rng.choice(pool, size=n_way, replace=False)) if n_way is not None else pool
    support, support_labels, query, query_labels = [], [], [], []
    for position, cls in enumerate(chosen):
        members = np.flatnonzero(labels == cls)
        if len(members) < k_shot + n_query:
            raise ValueError(
                f"Class {cls} has {len(members)} clips; {k_shot} shots + {n_query} queries needed."
            )
        drawn = rng.choice(members, size=k_shot + n_query, replace=False)
        support += drawn[:k_shot].tolist()
        query += drawn[k_shot:].tolist()
        support_labels += [position] * k_shot
        query_labels += [position] * n_query
    return Episode(
        chosen, np.asarray(support), np.asarray(support_labels), np.asarray(query), np.asarray(query_labels)
    )


# ---------------------------------------------------------------------------------------------------------------
# Optimal transport
# ---------------------------------------------------------------------------------------------------------------


def sinkhorn(
    cost: torch.Tensor,
    epsilon: float = 0.1,
    source_weights: torch.Tensor | None = None,
    target_weights: torch.Tensor | None = None,
    num_iters: int = 100,
    tol: float | None = None,
) -> torch.Tensor:
    """Entropic optimal transport plan by log-domain Sinkhorn iterations, batched over leading dimensions.

    Solves `min_T <T, C> - epsilon H(T)` subject to `T 1 = a`, `T^T 1 = b` with the dual updates
    `f = eps log a - eps LSE_j((g_j - C_ij) / eps)`, `g = eps log b - eps LSE_i((f_i - C_ij) / eps)`; the log domain
    stays finite for small `epsilon`, where the plain scaling `K = exp(-C / eps)` of PLOT underflows. Zero weights are
    allowed (masked points get no mass). The last update is `g`, so the column marginals are exact and the row
    marginals converge.

    Args:
        cost (`torch.Tensor` of shape `(..., M, N)`).
        epsilon (`float`): entropic regularisation (PLOT: 0.1 on `1 - cosine`).
        source_weights (`torch.Tensor` of shape `(..., M)`, *optional*): `a`, non-negative, summing to 1;
            default uniform `1 / M`. Broadcast against `cost`.
        target_weights (`torch.Tensor` of shape `(..., N)`, *optional*): `b`; default uniform `1 / N`.
        num_iters (`int`): maximum number of iterations.
        tol (`float`, *optional*): stop early when the largest change of `f` over an iteration is below `tol`; the
            test is over the whole batch, so a plan can differ (by about `tol`) with the batch it is computed in.

    Returns:
        `torch.Tensor` of shape `(..., M, N)`: the plan `T_ij = exp((f_i + g_j - C_ij) / eps)`.
    """
    *batch, m, n = cost.shape
    if source_weights is None:
        source_weights = cost.new_full((m,), 1.0 / m)
    if target_weights is None:
        target_weights = cost.new_full((n,), 1.0 / n)
    log_a = torch.broadcast_to(source_weights.to(cost.dtype), (*batch, m)).log()
    log_b = torch.broadcast_to(target_weights.to(cost.dtype), (*batch, n)).log()
    scaled = -cost / epsilon
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    for _ in range(num_iters):
        previous = f
        f = epsilon * (log_a - torch.logsumexp(scaled + g[..., None, :] / epsilon, dim=-1))
        g = epsilon * (log_b - torch.logsumexp(scaled + f[..., :, None] / epsilon, dim=-2))
        if tol is not None:
            # Masked points have f = -inf in both iterates: compare the finite ones only.
            change = (f - previous).abs().masked_fill(~torch.isfinite(f), 0.0)
            if float(change.max()) < tol:
                break
    return torch.exp(scaled + (f[..., :, None] + g[..., None, :]) / epsilon)


def _uniform(mask: torch.Tensor | None, size: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform weights over the valid points of `mask` `(..., size)` (all points without a mask)."""
    if mask is None:
        return like.new_full((size,), 1.0 / size)
    mask = mask.to(like.dtype)
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0)


def transport_similarity(
    similarity: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    epsilon: float = 0.1,
    num_iters: int = 100,
    tol: float | None = 1e-3,
) -> torch.Tensor:
    """OT similarity from a cosine matrix (PLOT): `sum_ij T_ij sim_ij` with `T` the Sinkhorn plan of cost `1 - sim`.

    The plan is computed without gradient (as PLOT); the result has gradients through the cosines. Marginals are
    uniform over the valid points.

    Args:
        similarity (`torch.Tensor` of shape `(..., M, N)`): cosines between two sets of local embeddings.
        x_mask (`torch.Tensor` of shape `(..., M)`, *optional*), y_mask (`(..., N)`, *optional*): 1 on valid points;
            broadcast against `similarity`.

    Returns:
        `torch.Tensor` of shape `(...)`: the similarities, in `[-1, 1]`.
    """
    with torch.no_grad():
        plan = sinkhorn(
            1.0 - similarity.detach(),
            epsilon,
            _uniform(x_mask, similarity.shape[-2], similarity),
            _uniform(y_mask, similarity.shape[-1], similarity),
            num_iters,
            tol,
        )
    return (plan * similarity).sum(dim=(-2, -1))


def ot_similarity(
    x: torch.Tensor,
    y: torch.Tensor,
    x_mask: torch.Tensor | None = None,
    y_mask: torch.Tensor | None = None,
    **ot_kwargs,
) -> torch.Tensor:
    """[`transport_similarity`] of two sets of normalised local embeddings `x` `(..., M, D)` and `y` `(..., N, D)`
    (leading dimensions broadcast) -> `(...)`."""
    return transport_similarity(x @ y.transpose(-1, -2), x_mask, y_mask, **ot_kwargs)


def pairwise_ot_similarity(
    x: torch.Tensor,
    x_mask: torch.Tensor | None,
    y: torch.Tensor,
    y_mask: torch.Tensor | None,
    chunk_size: int = 64,
    **ot_kwargs,
) -> torch.Tensor:
    """[`ot_similarity`] of every set of `x` `(P, M, D)` with every set of `y` `(R, N, D)` -> `(P, R)`.

    The cosines of a chunk of `x` against all of `y` come from one matrix product (a broadcast batched product would
    copy `y` for every row of `x`).
    """
    rows = []
    num_sets, length, dim = y.shape
    flat_y = y.reshape(num_sets * length, dim)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size]
        similarity = (chunk.reshape(-1, dim) @ flat_y.t()).view(
            chunk.shape[0], chunk.shape[1], num_sets, length
        )
        rows.append(
            transport_similarity(
                similarity.permute(0, 2, 1, 3),  # (chunk, R, M, N)
                None if x_mask is None else x_mask[start : start + chunk_size, None],
                None if y_mask is None else y_mask[None],
                **ot_kwargs,
            )
        )
    return torch.cat(rows)


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------


class _Rows:
    """`select(indices)`: the same features for a subset of rows (`None` fields stay `None`)."""

    def select(self, indices: Sequence[int]):
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        values = (getattr(self, item.name) for item in dataclasses.fields(self))
        return type(self)(*(None if value is None else value[index] for value in values))


@dataclass
class AudioFeatures(_Rows):
    """Frozen audio features of a dataset: `clip` `(num_clips, D)`, `frames` `(num_clips, T, D)` (normalised) and
    `frame_mask` `(num_clips, T)` (1 on frames of real audio; MGA-CLAP marks repeat-padding as padding)."""

    clip: torch.Tensor
    frames: torch.Tensor | None
    frame_mask: torch.Tensor | None


@dataclass
class ClassTexts(_Rows):
    """Class-side text features: `prototypes` `(C, D)` (the normalised mean of each class's prompt embeddings: the
    zero-shot classifier) and the fine-grained sets `local` `(C, L, D)` with `local_mask` `(C, L)`."""

    prototypes: torch.Tensor
    local: torch.Tensor | None
    local_mask: torch.Tensor | None


@torch.no_grad()
def extract_audio_features(
    model, processor, waveforms: Sequence[np.ndarray], batch_size: int = 32, progress: bool = False
) -> AudioFeatures:
    """Embed every clip once (any form of the audio input layer): the few-shot methods never change the model."""
    model.eval()
    embeds = embed_audio(model, processor, waveforms, batch_size=batch_size, progress=progress)
    clip = embeds.clip_embeds.cpu()
    if embeds.frame_embeds is None:
        return AudioFeatures(clip, None, None)
    frames, frame_mask = embeds.frame_embeds.cpu(), embeds.frame_mask.cpu()
    # Frames that are padding in every clip (the repeat-padding of short clips) carry no OT mass: drop them.
    keep = frame_mask.bool().any(0)
    return AudioFeatures(clip, frames[:, keep], frame_mask[:, keep])


@torch.no_grad()
def extract_class_texts(
    model, processor, class_prompts: Sequence[Sequence[str]], fine_grained_text: str = "words"
) -> ClassTexts:
    """Embed several prompts / descriptions per class.

    Args:
        class_prompts: for each class, its texts (e.g. `["dog can be heard", "a dog barks loudly"]`).
        fine_grained_text (`str`): the class set matched by OT at the fine grain: `"words"` (the word pieces of all
            the class's texts) or `"descriptions"` (one global embedding per text).
    """
    model.eval()
    counts = [len(prompts) for prompts in class_prompts]
    text = embed_text(model, processor, [p for prompts in class_prompts for p in prompts])
    per_class = torch.split(text.text_embeds, counts)
    prototypes = F.normalize(torch.stack([t.mean(0) for t in per_class]), dim=-1).cpu()
    if fine_grained_text == "descriptions":
        sets = list(per_class)
        masks = [torch.ones(len(t)) for t in sets]
    elif fine_grained_text == "words":
        if text.word_embeds is None:
            return ClassTexts(prototypes, None, None)
        words, masks_all = torch.split(text.word_embeds, counts), torch.split(text.word_mask, counts)
        sets = [w[m.bool()] for w, m in zip(words, masks_all, strict=True)]
        masks = [torch.ones(len(s)) for s in sets]
    else:
        raise ValueError(f"fine_grained_text must be 'words' or 'descriptions', got {fine_grained_text!r}.")
    local = torch.nn.utils.rnn.pad_sequence(sets, batch_first=True).cpu()
    return ClassTexts(prototypes, local, torch.nn.utils.rnn.pad_sequence(masks, batch_first=True).cpu())


# ---------------------------------------------------------------------------------------------------------------
# Classifiers
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FewShotConfig:
    """Hyper-parameters of the few-shot classifiers (fixed, no search: an episode has no validation data)."""

    zero_shot_scale: float = field(
        default=100.0,
        metadata={
            "help": "Scale of the zero-shot cosines for Tip-Adapter and the multi-grained method (Tip-Adapter's 100); "
            "the Treff adapter uses the model's own logit scale, as its code."
        },
    )
    alpha: float = field(
        default=1.0,
        metadata={
            "help": "Clip-grain cache weight (Treff's 1.0; Tip-Adapter's own 1.17 comes with a validation grid "
            "search that episodes do not allow)."
        },
    )
    beta: float = field(
        default=5.5, metadata={"help": "Clip-grain cache sharpness in exp(-beta (1 - affinity))."}
    )
    fine_zero_shot_weight: float = field(
        default=0.5,
        metadata={"help": "lambda_f, weight of the OT zero-shot logits (frames vs class word sets)."},
    )
    fine_alpha: float = field(
        default=1.0, metadata={"help": "Weight of the frame-grain cache (OT of frames)."}
    )
    fine_beta: float = field(default=5.5, metadata={"help": "Sharpness of the frame-grain cache."})
    epsilon: float = field(default=0.1, metadata={"help": "Entropic regularisation of the OT (PLOT: 0.1)."})
    sinkhorn_iters: int = field(default=100, metadata={"help": "Maximum Sinkhorn iterations (PLOT: 100)."})
    sinkhorn_tol: float | None = field(
        default=1e-3, metadata={"help": "Early stop of the Sinkhorn iterations."}
    )
    fine_grained_text: str = field(
        default="words",
        metadata={
            "help": "Class set matched by OT at the fine grain: 'words' (word pieces of the class's texts) or "
            "'descriptions' (one global embedding per text).",
            "choices": ("words", "descriptions"),
        },
    )
    treff_epochs: int = field(
        default=20, metadata={"help": "Full-batch AdamW steps of the Treff 'match' adapter (lam4fsl: 15-20)."}
    )
    treff_lr: float = field(
        default=1e-4, metadata={"help": "Learning rate of the Treff adapter (lam4fsl: 1e-4)."}
    )
    train_epochs: int = field(default=20, metadata={"help": "Steps of the trainable multi-grained variant."})
    train_lr: float = field(
        default=1e-3,
        metadata={"help": "Learning rate of the trainable multi-grained variant (Tip-Adapter-F's)."},
    )
    contrastive_weight: float = field(
        default=1.0, metadata={"help": "Weight of the multi-grained contrastive loss next to cross-entropy."}
    )
    contrastive_temperature: float = field(default=0.07, metadata={"help": "Temperature of that loss."})
    leave_one_out: bool = field(
        default=True,
        metadata={"help": "When training on the supports, a support never matches its own cache key."},
    )

    @property
    def ot_kwargs(self) -> dict:
        return {"epsilon": self.epsilon, "num_iters": self.sinkhorn_iters, "tol": self.sinkhorn_tol}


def one_hot(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cache values `(num_supports, num_classes)` float."""
    return F.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.long), num_classes).float()


def cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """Tip-Adapter's cache read-out `exp(-beta (1 - A)) L`: `(Q, S)` affinities, `(S, C)` values -> `(Q, C)`."""
    return torch.exp(-beta * (1.0 - affinity)) @ values


def zero_shot_logits(query: AudioFeatures, texts: ClassTexts, scale: float) -> torch.Tensor:
    """`scale * cos(query clip, class prototype)` -> `(Q, C)`."""
    return scale * query.clip @ texts.prototypes.t()


def tip_adapter_logits(
    query: AudioFeatures,
    support: AudioFeatures,
    values: torch.Tensor,
    texts: ClassTexts,
    config: FewShotConfig,
) -> torch.Tensor:
    """Tip-Adapter (training-free): zero-shot + `alpha` x the clip-grain cache (keys = support clip embeddings)."""
    zero_shot = zero_shot_logits(query, texts, config.zero_shot_scale)
    return zero_shot + config.alpha * cache_logits(query.clip @ support.clip.t(), values, config.beta)


def treff_adapter_logits(
    query: AudioFeatures,
    support: AudioFeatures,
    values: torch.Tensor,
    texts: ClassTexts,
    config: FewShotConfig,
    logit_scale: float,
) -> torch.Tensor:
    """Treff adapter, "match" variant (lam4fsl): keys = a linear layer initialised with the support embeddings.

    Logits `alpha exp(-beta + beta q K^T) Y + logit_scale cos(q, W)`; the keys are fitted with cross-entropy on the
    supports for `treff_epochs` full-batch AdamW steps (0 = the training-free Treff adapter).
    """
    keys = nn.Parameter(support.clip.clone())
    zero_shot_support = logit_scale * support.clip @ texts.prototypes.t()

    def logits(features: torch.Tensor, zero_shot: torch.Tensor) -> torch.Tensor:
        return config.alpha * torch.exp(-config.beta + config.beta * features @ keys.t()) @ values + zero_shot

    if config.treff_epochs > 0:
        optimizer = torch.optim.AdamW([keys], lr=config.treff_lr, eps=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.treff_epochs)
        targets = values.argmax(1)
        for _ in range(config.treff_epochs):
            loss = F.cross_entropy(logits(support.clip, zero_shot_support), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        return logits(query.clip, logit_scale * query.clip @ texts.prototypes.t())


def multi_grained_logits(
    query: AudioFeatures,
    support: AudioFeatures,
    values: torch.Tensor,
    texts: ClassTexts,
    config: FewShotConfig,
    support_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The multi-grained key-value cache blended with two-grain zero-shot logits (training-free)::

        s cos(a, W) + lambda_f s OT(frames, class words)                       zero-shot, clip and frame grain
        + alpha exp(-beta (1 - cos(a, K))) Y + alpha_f exp(-beta_f (1 - OT(frames, K_f))) Y     the cache

    With `alpha = fine_alpha = fine_zero_shot_weight = 0` this is exactly the zero-shot classifier.

    Args:
        query, support ([`AudioFeatures`]): with frames (MGA-CLAP).
        values (`torch.Tensor` of shape `(S, C)`): one-hot support labels.
        texts ([`ClassTexts`]): prototypes and fine-grained class sets.
        support_mask (`torch.Tensor` of shape `(Q, S)`, *optional*): 0 drops a (query, key) pair from the caches
            (leave-one-out training).
    """
    logits = zero_shot_logits(query, texts, config.zero_shot_scale)
    needs_frames = config.fine_zero_shot_weight != 0 or config.fine_alpha != 0
    if needs_frames and (query.frames is None or texts.local is None):
        raise ValueError("The multi-grained method needs frame and word embeddings (an MGA-CLAP model).")
    if config.fine_zero_shot_weight != 0:
        fine = pairwise_ot_similarity(
            query.frames, query.frame_mask, texts.local, texts.local_mask, **config.ot_kwargs
        )
        logits = logits + config.fine_zero_shot_weight * config.zero_shot_scale * fine
    if config.alpha != 0:
        coarse = torch.exp(-config.beta * (1.0 - query.clip @ support.clip.t()))
        coarse = coarse if support_mask is None else coarse * support_mask
        logits = logits + config.alpha * coarse @ values
    if config.fine_alpha != 0:
        affinity = pairwise_ot_similarity(
            query.frames, query.frame_mask, support.frames, support.frame_mask, **config.ot_kwargs
        )
        fine_cache = torch.exp(-config.fine_beta * (1.0 - affinity))
        fine_cache = fine_cache if support_mask is None else fine_cache * support_mask
        logits = logits + config.fine_alpha * fine_cache @ values
    return logits


def multi_grained_contrastive_loss(
    support: AudioFeatures, labels: torch.Tensor, texts: ClassTexts, temperature: float, ot_kwargs: dict
) -> torch.Tensor:
    """Multi-grained cross-modal contrast on the supports: InfoNCE between audio and class texts at two grains.

    Each grain: audio -> text is a cross-entropy over the classes; text -> audio, for each class, the mean over its
    supports of the log-softmax over all supports. Clip grain on `cos(clip, prototype)`, frame grain on
    `OT(frames, class set)`; the loss is the mean of the four terms.
    """
    grains = [support.clip @ texts.prototypes.t()]
    if support.frames is not None and texts.local is not None:
        grains.append(
            pairwise_ot_similarity(
                support.frames, support.frame_mask, texts.local, texts.local_mask, **ot_kwargs
            )
        )
    positives = one_hot(labels, texts.prototypes.shape[0])  # (S, C)
    terms = []
    for similarity in grains:  # (S, C)
        logits = similarity / temperature
        terms.append(F.cross_entropy(logits, labels))
        log_probs = logits.t().log_softmax(dim=1)  # (C, S)
        present = positives.sum(0) > 0
        terms.append(-((log_probs * positives.t()).sum(1)[present] / positives.sum(0)[present]).mean())
    return torch.stack(terms).mean()


def trained_multi_grained_logits(
    query: AudioFeatures,
    support: AudioFeatures,
    values: torch.Tensor,
    texts: ClassTexts,
    config: FewShotConfig,
) -> torch.Tensor:
    """The trainable multi-grained variant: keys (clip and frame grain) and class texts (prototypes and fine sets)
    become parameters initialised from the features, fitted on the supports for `train_epochs` full-batch AdamW
    steps with cross-entropy of the multi-grained logits + `contrastive_weight` x
    [`multi_grained_contrastive_loss`]. Parameters are re-normalised in every forward (they stay on the sphere)."""
    parameters = {
        "clip": nn.Parameter(support.clip.clone()),
        "prototypes": nn.Parameter(texts.prototypes.clone()),
    }
    if support.frames is not None:
        parameters["frames"] = nn.Parameter(support.frames.clone())
    if texts.local is not None:
        parameters["local"] = nn.Parameter(texts.local.clone())

    def current() -> tuple[AudioFeatures, ClassTexts]:
        keys = AudioFeatures(
            F.normalize(parameters["clip"], dim=-1),
            F.normalize(parameters["frames"], dim=-1) if "frames" in parameters else None,
            support.frame_mask,
        )
        local = F.normalize(parameters["local"], dim=-1) if "local" in parameters else None
        return keys, ClassTexts(F.normalize(parameters["prototypes"], dim=-1), local, texts.local_mask)

    labels = values.argmax(1)
    optimizer = torch.optim.AdamW(parameters.values(), lr=config.train_lr, eps=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, config.train_epochs))
    # Leave-one-out: a support scored against its own key would be classified by identity, not similarity.
    mask = 1.0 - torch.eye(len(labels)) if config.leave_one_out else None
    for _ in range(config.train_epochs):
        keys, class_texts = current()
        logits = multi_grained_logits(support, keys, values, class_texts, config, support_mask=mask)
        loss = F.cross_entropy(logits, labels)
        if config.contrastive_weight:
            loss = loss + config.contrastive_weight * multi_grained_contrastive_loss(
                support, labels, class_texts, config.contrastive_temperature, config.ot_kwargs
            )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        keys, class_texts = current()
        return multi_grained_logits(query, keys, values, class_texts, config)


# ---------------------------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------------------------

METHODS = ("zero_shot", "tip_adapter", "treff_adapter", "multi_grained", "multi_grained_trained")


def episode_logits(
    method: str,
    episode: Episode,
    features: AudioFeatures,
    texts: ClassTexts,
    config: FewShotConfig,
    logit_scale: float = 1.0 / 0.07,
) -> torch.Tensor:
    """`(num_queries, N)` logits of `method` (one of [`METHODS`]) on one episode; `texts` covers every dataset class."""
    query, support = features.select(episode.query), features.select(episode.support)
    class_texts = texts.select(episode.classes)
    values = one_hot(episode.support_labels, len(episode.classes))
    if method == "zero_shot":
        return zero_shot_logits(query, class_texts, config.zero_shot_scale)
    if method == "tip_adapter":
        return tip_adapter_logits(query, support, values, class_texts, config)
    if method == "treff_adapter":
        return treff_adapter_logits(query, support, values, class_texts, config, logit_scale)
    if method == "multi_grained":
        with torch.no_grad():
            return multi_grained_logits(query, support, values, class_texts, config)
    if method == "multi_grained_trained":
        return trained_multi_grained_logits(query, support, values, class_texts, config)
    raise ValueError(f"Unknown method {method!r}: use one of {METHODS}.")


@dataclass
class FewShotResult:
    """Per-method accuracies of every episode, and their mean with the 95 % t-interval half-width."""

    accuracies: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for method, values in self.accuracies.items():
            mean, half = mean_confidence_interval(values)
            out[method] = {"mean": mean, "ci95": half, "episodes": len(values)}
        return out


def run_episodes(
    features: AudioFeatures,
    labels: Sequence[int],
    texts: ClassTexts,
    splits: Sequence[Sequence[int]],
    k_shot: int,
    n_query: int,
    episodes_per_split: int,
    methods: Sequence[str] = METHODS,
    config: FewShotConfig | None = None,
    seed: int = 0,
    n_way: int | None = None,
    logit_scale: float = 1.0 / 0.07,
    progress: Callable[[int, int], None] | None = None,
) -> FewShotResult:
    """The episodic protocol: for each class split, `episodes_per_split` N-way K-shot episodes; every method sees
    the same episodes. Episode `e` of split `s` is drawn from `(seed, s * episodes_per_split + e)`; the interval is
    over all episodes of all splits."""
    config = config or FewShotConfig()
    result = FewShotResult({m: [] for m in methods})
    total = len(splits) * episodes_per_split
    for split_index, classes in enumerate(splits):
        for e in range(episodes_per_split):
            episode = sample_episode(
                labels, classes, k_shot, n_query, seed, split_index * episodes_per_split + e, n_way
            )
            targets = torch.as_tensor(episode.query_labels)
            for method in methods:
                logits = episode_logits(method, episode, features, texts, config, logit_scale)
                result.accuracies[method].append(float((logits.argmax(1) == targets).float().mean()))
            if progress is not None:
                progress(split_index * episodes_per_split + e + 1, total)
    return result


def evaluate_few_shot(
    model,
    processor,
    dataset,
    class_prompts: Sequence[Sequence[str]],
    *,
    k_shots: Sequence[int],
    n_way: int,
    n_query: int,
    num_splits: int = 5,
    split_seed: int = 0,
    episodes_per_split: int = 20,
    methods: Sequence[str] = METHODS,
    config: FewShotConfig | None = None,
    seed: int = 0,
    audio_column: str = "audio",
    label_column: str = "label",
    batch_size: int = 32,
    progress: bool = False,
) -> list[dict]:
    """The whole protocol on a labelled-clip dataset: every clip and class embedded once, then [`run_episodes`] for every
    K of `k_shots` on `num_splits` fixed class splits ([`fixed_class_splits`]) of `n_way` classes, every method on the
    same episodes.

    Args:
        dataset (`datasets.Dataset`): labelled clips (`audio_column`, `label_column`).
        class_prompts (`Sequence[Sequence[str]]`): the texts of each class, in class-index order (see
            [`default_class_prompts`]).
        progress (`bool`): progress bars on stderr: clips decoded, clips embedded, episodes run.

    Returns:
        `list[dict]`: one row `{"method", "k_shot", "mean", "ci95", "episodes"}` per method and K (accuracies as
        fractions).
    """
    from ..data.labels import class_indices, class_names_of
    from ..data.sources import load_waveforms

    config = config or FewShotConfig()
    labels, names = class_indices(list(dataset[label_column]), class_names_of(dataset, label_column))
    if len(class_prompts) != len(names):
        raise ValueError(f"Got texts for {len(class_prompts)} classes; the dataset has {len(names)}.")
    waveforms = load_waveforms(
        dataset, audio_column, processor.feature_extractor.sampling_rate, progress=progress
    )
    features = extract_audio_features(model, processor, waveforms, batch_size, progress=progress)
    texts = extract_class_texts(model, processor, class_prompts, config.fine_grained_text)
    splits = fixed_class_splits(len(names), num_splits, n_way, split_seed)
    options = dict(methods=methods, config=config, seed=seed, logit_scale=logit_scale_value(model))
    rows = []
    # Episodes are many small tensor operations: one thread avoids the synchronisation overhead of several (an order
    # of magnitude on a loaded 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    total = len(k_shots) * num_splits * episodes_per_split
    bar = tqdm(total=total, desc="Few-shot episodes", unit="episodes", disable=not progress)
    try:
        for k_shot in k_shots:
            result = run_episodes(
                features, labels, texts, splits, k_shot, n_query, episodes_per_split,
                progress=lambda *_: bar.update(1), **options,
            )  # fmt: skip
            rows += [
                {"method": method, "k_shot": k_shot, **summary}
                for method, summary in result.summary().items()
            ]
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """[`evaluate_few_shot`] rows as a markdown table of accuracies (%) with their 95 % interval half-widths."""
    shots = sorted({row["k_shot"] for row in rows})
    lines = ["| method | " + " | ".join(f"K = {k}" for k in shots) + " |", "|---|" + "---:|" * len(shots)]
    for method in dict.fromkeys(row["method"] for row in rows):
        cells = []
        for k in shots:
            row = next(r for r in rows if r["method"] == method and r["k_shot"] == k)
            cells.append(f"{100 * row['mean']:.1f} ± {100 * row['ci95']:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_class_prompts(
    class_names: Sequence[str],
    templates: Sequence[str] = ("{} can be heard",),
    descriptions: dict | None = None,
) -> list[list[str]]:
    """Texts per class: each template filled with the class name, plus any `descriptions[name]` (enrichment).

    MGA-CLAP's official ESC-50 prompt is "{label} can be heard"; descriptions can come from a generative model
    (the paper) or, for the synthetic classes, from their `phrases`.
    """
    descriptions = descriptions or {}
    return [[t.format(name) for t in templates] + list(descriptions.get(name, ())) for name in class_names]


def logit_scale_value(model) -> float:
    """The model's logit scale as a float (used by the Treff adapter's zero-shot term)."""
    with torch.no_grad():
        return float(logit_scale(model))


__all__ = [
    "METHODS",
    "AudioFeatures",
    "ClassTexts",
    "Episode",
    "FewShotConfig",
    "FewShotResult",
    "cache_logits",
    "default_class_prompts",
    "episode_logits",
    "evaluate_few_shot",
    "extract_audio_features",
    "extract_class_texts",
    "fixed_class_splits",
    "logit_scale_value",
    "markdown_table",
    "multi_grained_contrastive_loss",
    "multi_grained_logits",
    "one_hot",
    "ot_similarity",
    "pairwise_ot_similarity",
    "transport_similarity",
    "run_episodes",
    "sample_episode",
    "sinkhorn",
    "tip_adapter_logits",
    "trained_multi_grained_logits",
    "treff_adapter_logits",
    "zero_shot_logits",
]
