"""TeminAL-style temporal instillation: composite clips with relation captions, the hard-negative loss, ZSTE.

TeminAL (Sinha et al., arXiv 2408.09269) post-trains a contrastive audio-language model in two stages: stage A
teaches it to tell one sound from several, stage B teaches order. No code is public and the paper's templates,
layouts and loss are unknown: everything here is a **reconstruction** consistent with the abstract
(docs/reconstructions.md §3); each choice is a parameter.

Reading order: the composite builder (sample positions are returned exactly) -> stage A / B groups with their hard
negatives -> the loss -> ZSTE-style evaluation. Embeddings come from the package's embedding API, so MGA-CLAP and
transformers' CLAP models both work.

Layout, for clips fitted to `S` samples (cropped from the start or zero-padded at the end) on a canvas of
`2 S + gap` samples (silence elsewhere)::

    single  "{a}"          a in [0, S)
    and     "{a} and {b}"  a in [0, S), b in [S + gap, 2 S + gap)   (layout "sequence")
                           a and b both in [0, S)                   (layout "overlay")
    before  "{a} before {b}"  a in [0, S), b in [S + gap, 2 S + gap)
    after   "{a} after {b}"   b in [0, S), a in [S + gap, 2 S + gap)
    while   "{a} while {b}"   a and b both in [0, S)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils.logging import tqdm

from ..data.labels import class_indices, class_names_of, label_text
from ..data.sources import load_waveforms
from ..embedding import embed_audio, embed_text, logit_scale
from ..evaluation.frames import frame_scores
from ..temporal_relations import (
    RelationCalibration,
    fit_relation_calibration,
    pair_statistics,
    parse_relation,
    score_relations,
    soft_order_margin,
)

if TYPE_CHECKING:
    import datasets

RELATIONS = ("single", "and", "before", "after", "while")
DEFAULT_TEMPLATES: dict[str, str] = {
    "single": "{a}",
    "and": "{a} and {b}",
    "before": "{a} before {b}",
    "after": "{a} after {b}",
    "while": "{a} while {b}",
}
# The relations ZSTE scores: the audio of "before" and "after" is the same (a then b), worded both ways.
EVALUATION_RELATIONS = ("before", "after", "while", "single")
# The two-event relations also scored 3-way (order, reversed order, simultaneous), by both paths.
TWO_EVENT_RELATIONS = ("before", "after", "while")


# ---------------------------------------------------------------------------------------------------------------
# Composite builder
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TemporalExample:
    """One composite clip and its caption.

    Attributes:
        audio (`np.ndarray` of shape `(2 * segment_samples + gap_samples,)`): float32 waveform.
        caption (`str`): the relation caption, e.g. `"siren before dripping"`.
        relation (`str`): one of [`RELATIONS`].
        labels (`tuple[str, ...]`): the label texts in caption order (`a`, `b`), one for `"single"`.
        segments (`list[tuple[str, int, int]]`): `(label, start, stop)` sample slots of each clip in `audio`.
        key (`str`): what the caption asserts, independent of wording ("a before b" and "b after a" share it);
            captions with equal keys are never each other's negatives.
        negatives (`list[tuple[str, str]]`): explicit hard-negative `(caption, key)` pairs.
    """

    audio: np.ndarray
    caption: str
    relation: str
    labels: tuple[str, ...]
    segments: list[tuple[str, int, int]]
    key: str
    negatives: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class CompositeLayout:
    """Where the clips of a composite go (module docstring).

    Attributes:
        segment_samples (`int`): `S`, the slot of each clip (clips are cropped from the start or zero-padded to it).
        gap_samples (`int`): silence between the two slots of a sequence.
        templates (`Mapping[str, str]`, *optional*): caption templates overriding [`DEFAULT_TEMPLATES`].
    """

    segment_samples: int
    gap_samples: int = 0
    templates: Mapping[str, str] | None = None


# Two labelled clips: (clip a, label a, clip b, label b).
ClipPair = tuple[np.ndarray, str, np.ndarray, str]


def _fit(clip: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop from the start or zero-pad at the end to exactly `num_samples` (no tiling: tiling would read as repetition)."""
    clip = np.asarray(clip, dtype=np.float32)[:num_samples]
    return np.pad(clip, (0, num_samples - clip.shape[0]))


def relation_key(relation: str, a: str, b: str | None = None) -> str:
    """The wording-independent meaning of a caption: `"seq|first|second"`, `"while|x|y"`, `"and|x|y"`, `"single|a"`."""
    if relation == "single":
        return f"single|{a}"
    if relation == "before":
        return f"seq|{a}|{b}"
    if relation == "after":
        return f"seq|{b}|{a}"
    if relation in ("while", "and"):
        first, second = sorted((a, b))
        return f"{relation}|{first}|{second}"
    raise ValueError(f"Unknown relation {relation!r}: use one of {RELATIONS}.")


def relation_caption(
    relation: str, a: str, b: str | None = None, templates: Mapping[str, str] | None = None
) -> str:
    """`templates[relation]` (default [`DEFAULT_TEMPLATES`]) filled with label texts `a`, `b`."""
    return {**DEFAULT_TEMPLATES, **(templates or {})}[relation].format(a=a, b=b)


def hard_negatives(
    relation: str, a: str, b: str, templates: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Explicit hard-negative `(caption, key)` pairs of a caption (TeminAL's inversion and overlay negatives).

    `before` / `after`: the swapped order in the same wording and the overlay; `while`: both orders; `and`: the two
    single-sound captions; `single` (with `b` its group partner): the two-sound caption.
    """

    def item(rel: str, x: str, y: str | None = None) -> tuple[str, str]:
        return relation_caption(rel, x, y, templates), relation_key(rel, x, y)

    if relation in ("before", "after"):
        return [item(relation, b, a), item("while", a, b)]
    if relation == "while":
        return [item("before", a, b), item("before", b, a)]
    if relation == "and":
        return [item("single", a), item("single", b)]
    if relation == "single":
        return [item("and", a, b)]
    raise ValueError(f"Unknown relation {relation!r}: use one of {RELATIONS}.")


def build_temporal_example(
    clip_a: np.ndarray,
    label_a: str,
    clip_b: np.ndarray | None,
    label_b: str | None,
    relation: str,
    layout: CompositeLayout,
    and_layout: str = "sequence",
    peak_level: float = 0.95,
) -> TemporalExample:
    """Compose two labelled clips (or one, for `"single"`) into a relation example (layout: module docstring).

    Args:
        clip_a, clip_b (`np.ndarray` of shape `(num_samples,)`): mono waveforms at the model's rate; each is fitted to
            `layout.segment_samples`. `clip_b` / `label_b` may be `None` for `"single"` (then the example has no
            negative).
        label_a, label_b (`str`): label texts.
        relation (`str`): one of [`RELATIONS`].
        layout ([`CompositeLayout`]): slot length, gap and caption templates.
        and_layout (`str`): `"sequence"` or `"overlay"`, the audio of an `"and"` caption.
        peak_level (`float`): a mix peaking above this is scaled down to it as a whole (overlays can exceed 1).

    Returns:
        [`TemporalExample`] with `audio` of `2 * segment_samples + gap_samples` samples.
    """
    if relation not in RELATIONS:
        raise ValueError(f"Unknown relation {relation!r}: use one of {RELATIONS}.")
    if relation != "single" and clip_b is None:
        raise ValueError(f"Relation {relation!r} needs two clips.")
    if and_layout not in ("sequence", "overlay"):
        raise ValueError(f"and_layout must be 'sequence' or 'overlay', got {and_layout!r}.")
    size, templates = layout.segment_samples, layout.templates
    audio = np.zeros(2 * size + layout.gap_samples, dtype=np.float32)
    second = size + layout.gap_samples
    fitted_a = _fit(clip_a, size)
    if relation == "single":
        starts = [(label_a, fitted_a, 0)]
    elif relation == "while" or (relation == "and" and and_layout == "overlay"):
        starts = [(label_a, fitted_a, 0), (label_b, _fit(clip_b, size), 0)]
    elif relation == "after":
        starts = [(label_b, _fit(clip_b, size), 0), (label_a, fitted_a, second)]
    else:  # before, and (sequence)
        starts = [(label_a, fitted_a, 0), (label_b, _fit(clip_b, size), second)]
    for _, signal, start in starts:
        audio[start : start + size] += signal
    peak = float(np.abs(audio).max())
    if peak > peak_level:
        audio *= np.float32(peak_level / peak)
    negatives = hard_negatives(relation, label_a, label_b, templates) if label_b is not None else []
    return TemporalExample(
        audio=audio,
        caption=relation_caption(relation, label_a, label_b, templates),
        relation=relation,
        labels=(label_a,) if relation == "single" else (label_a, label_b),
        segments=[(label, start, start + size) for label, _, start in starts],
        key=relation_key(relation, label_a, label_b),
        negatives=negatives,
    )


def stage_a_group(
    pair: ClipPair, rng: np.random.Generator, layout: CompositeLayout, overlay_probability: float = 0.5
) -> list[TemporalExample]:
    """TeminAL A for one pair: `"a and b"` (sequence or overlay) and the two single-sound clips."""
    clip_a, label_a, clip_b, label_b = pair
    and_layout = "overlay" if rng.random() < overlay_probability else "sequence"
    return [
        build_temporal_example(clip_a, label_a, clip_b, label_b, "and", layout, and_layout=and_layout),
        build_temporal_example(clip_a, label_a, clip_b, label_b, "single", layout),
        build_temporal_example(clip_b, label_b, clip_a, label_a, "single", layout),
    ]


def stage_b_group(
    pair: ClipPair, rng: np.random.Generator, layout: CompositeLayout, after_probability: float = 0.5
) -> list[TemporalExample]:
    """TeminAL B for one pair: a then b, b then a (each worded "before" or, with `after_probability`, "after"), overlay.

    The three audios are each other's hard negatives (swapped order, overlay), so a batch of whole groups holds
    the hard-negative audio of every caption.
    """
    clip_a, label_a, clip_b, label_b = pair

    def sequence(x_clip, x, y_clip, y) -> TemporalExample:  # audio x then y
        if rng.random() < after_probability:
            return build_temporal_example(y_clip, y, x_clip, x, "after", layout)  # "y after x"
        return build_temporal_example(x_clip, x, y_clip, y, "before", layout)

    return [
        sequence(clip_a, label_a, clip_b, label_b),
        sequence(clip_b, label_b, clip_a, label_a),
        build_temporal_example(clip_a, label_a, clip_b, label_b, "while", layout),
    ]


def split_class_pairs(
    num_classes: int, heldout_fraction: float = 0.0, seed: int = 0
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Unordered class pairs `(i < j)` split into (training pairs, held-out pairs), deterministically per seed."""
    pairs = list(itertools.combinations(range(num_classes), 2))
    order = np.random.default_rng(seed).permutation(len(pairs))
    num_heldout = int(round(heldout_fraction * len(pairs)))
    heldout = sorted(pairs[i] for i in order[:num_heldout])
    return sorted(pairs[i] for i in order[num_heldout:]), heldout


def sample_pair_clips(
    labels: Sequence[int], pairs: Sequence[tuple[int, int]], num: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """`num` `(clip index of a, clip index of b)` draws: a random allowed class pair in random order, a random clip of each."""
    by_class: dict[int, np.ndarray] = {}
    for c in sorted(set(labels)):
        by_class[c] = np.flatnonzero(np.asarray(labels) == c)
    usable = [p for p in pairs if p[0] in by_class and p[1] in by_class]
    if not usable:
        raise ValueError("No allowed class pair has clips in this dataset.")
    draws = []
    for _ in range(num):
        first, second = usable[rng.integers(len(usable))]
        if rng.random() < 0.5:
            first, second = second, first
        draws.append((int(rng.choice(by_class[first])), int(rng.choice(by_class[second]))))
    return draws


# ---------------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------------


def temporal_contrastive_loss(
    audio_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    negative_text_embeds: torch.Tensor,
    keys: torch.Tensor,
    negative_keys: torch.Tensor,
    logit_scale: torch.Tensor | float,
    hard_negative_weight: float = 1.0,
) -> torch.Tensor:
    """Symmetric InfoNCE with explicit hard negatives (a TeminAL "TNCE" reconstruction).

    Audio -> text, row `i`: the batch captions plus row `i`'s own hard-negative captions (weighted by
    `hard_negative_weight`, i.e. `log w` added to their logits); a batch caption with the same key as caption `i`
    (same meaning, another clip) or as one of its hard negatives (already present explicitly) is left out.
    Text -> audio, row `i`: the batch audios; those whose key is one of caption `i`'s hard-negative keys (the
    swapped-order and overlaid audios of a whole group) get the weight; same-key audios other than `i` are left out.
    With `w = 1`, no negatives and distinct keys this is the CLAP loss. Mean over rows, then over directions.

    Args:
        audio_embeds (`torch.Tensor` of shape `(batch, dim)`): normalised audio embeddings.
        text_embeds (`torch.Tensor` of shape `(batch, dim)`): normalised embeddings of the paired captions.
        negative_text_embeds (`torch.Tensor` of shape `(batch, num_negatives, dim)`): normalised hard-negative
            captions of each row (any values where `negative_keys` is -1).
        keys (`torch.LongTensor` of shape `(batch,)`): integer ids of each caption's key ([`relation_key`]).
        negative_keys (`torch.LongTensor` of shape `(batch, num_negatives)`): ids of the negatives' keys, -1 = none.
        logit_scale (`torch.Tensor` or `float`): `1 / temperature`.
        hard_negative_weight (`float`): `w > 0`.
    """
    batch = audio_embeds.shape[0]
    eye = torch.eye(batch, dtype=torch.bool, device=audio_embeds.device)
    log_weight = float(np.log(hard_negative_weight))
    same = (keys[:, None] == keys[None, :]) & ~eye  # (B, B)
    valid_negative = negative_keys >= 0  # (B, H)
    # explicit[i, j]: the key of batch item j is one of row i's hard-negative keys.
    explicit = ((keys[None, :, None] == negative_keys[:, None, :]) & valid_negative[:, None, :]).any(
        -1
    ) & ~eye
    targets = torch.arange(batch, device=audio_embeds.device)

    a2t_batch = (logit_scale * audio_embeds @ text_embeds.t()).masked_fill(same | explicit, float("-inf"))
    a2t_negative = logit_scale * torch.einsum("bd,bhd->bh", audio_embeds, negative_text_embeds) + log_weight
    a2t_negative = a2t_negative.masked_fill(~valid_negative, float("-inf"))
    a2t = F.cross_entropy(torch.cat([a2t_batch, a2t_negative], dim=1), targets)

    t2a = logit_scale * text_embeds @ audio_embeds.t() + log_weight * explicit.to(audio_embeds.dtype)
    t2a = F.cross_entropy(t2a.masked_fill(same, float("-inf")), targets)
    return (a2t + t2a) / 2


def key_ids(examples: Sequence[TemporalExample], max_negatives: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer ids `(batch,)` of the examples' keys and `(batch, max_negatives)` of their negatives' keys (-1 pads)."""
    vocabulary: dict[str, int] = {}
    keys = torch.tensor([vocabulary.setdefault(e.key, len(vocabulary)) for e in examples])
    negative_keys = torch.full((len(examples), max_negatives), -1, dtype=torch.long)
    for row, example in enumerate(examples):
        for column, (_, key) in enumerate(example.negatives):
            negative_keys[row, column] = vocabulary.setdefault(key, len(vocabulary))
    return keys, negative_keys


def sequence_order(example: TemporalExample) -> tuple[str, str] | None:
    """`(label heard first, label heard second)` of a two-clip composite in sequence (its slots start at different
    samples: "before", "after", "and" in sequence), else `None` (overlay, single)."""
    if len(example.segments) != 2 or example.segments[0][1] == example.segments[1][1]:
        return None
    first, second = sorted(example.segments, key=lambda segment: segment[1])
    return first[0], second[0]


def frame_order_loss(
    model,
    processor,
    examples: Sequence[TemporalExample],
    frame_embeds: torch.Tensor | None,
    frame_mask: torch.Tensor | None = None,
    order_scale_seconds: float = 0.5,
) -> torch.Tensor | None:
    """The order term of TeminAL post-training: a logistic loss that each sequence composite's asserted order wins
    in its frame-grounded order margin.

    For every example of [`sequence_order`] (label `a` heard first, `b` second), both labels are grounded with the
    frame-text cosine (the bare label, as the SED path and [`evaluate_temporal`]'s frame path), and the
    centre-of-mass margin `m = position(b) - position(a)` (seconds) of
    [`~temporal_relations.soft_order_margin`] (the same computation as the training-free
    [`~temporal_relations.pair_statistics`], kept differentiable) enters `softplus(-m / order_scale_seconds)`
    (`-log P(a before b)` of the frame path's order probability). Mean over those examples.

    Args:
        examples (`Sequence[TemporalExample]`): the batch, in the order of `frame_embeds`.
        frame_embeds (`torch.Tensor` of shape `(batch, frames, dim)`): the normalised frames of the batch's
            composites (from the same forward pass as the clip embeddings); `None` for a model without frames.
        frame_mask (`torch.Tensor` of shape `(batch, frames)`, *optional*): 1 on real frames.
        order_scale_seconds (`float`): the logistic's scale (the frame path's `RelationCalibration` default, 0.5 s).

    Returns:
        A scalar tensor, or `None` when the batch holds no sequence composite (stage A with overlays only).

    Raises:
        `ValueError`: a model without frames (e.g. transformers' CLAP), or a scale <= 0.
    """
    if not order_scale_seconds > 0:
        raise ValueError(f"`order_scale_seconds` must be > 0, got {order_scale_seconds!r}.")
    if frame_embeds is None:
        raise ValueError(
            "The order loss grounds the events in the frames: this model returns no frame embeddings (MGA-CLAP does)."
        )
    ordered = [(row, order) for row, example in enumerate(examples) if (order := sequence_order(example))]
    if not ordered:
        return None
    phrases = list(dict.fromkeys(label for _, order in ordered for label in order))
    text = embed_text(
        model, processor, phrases, batch_size=len(phrases), with_grad=True, return_word_embeds=False
    ).text_embeds
    rows = torch.tensor([row for row, _ in ordered], device=frame_embeds.device)
    columns = torch.tensor(
        [[phrases.index(label) for label in order] for _, order in ordered], device=frame_embeds.device
    )
    frames = frame_embeds[rows]  # (n, T, D)
    curves = torch.einsum("ntd,nkd->ntk", frames, text.to(frames.dtype)[columns])  # (n, T, 2): first, second
    boundaries, lengths = _composite_frame_lengths(
        processor, [len(examples[row].audio) for row, _ in ordered], frames.shape[1], frames.device
    )
    if frame_mask is not None:
        lengths = lengths * frame_mask[rows].to(lengths.dtype)
    margins = soft_order_margin(curves[..., 0], curves[..., 1], boundaries, lengths)
    return F.softplus(-margins / order_scale_seconds).mean().to(frames.dtype)


def _composite_frame_lengths(
    processor, num_samples: Sequence[int], num_frames: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame boundaries `(T + 1,)` in seconds and each clip's frame lengths `(n, T)`: the frames span the model's input
    window (`max_length_s`), cut at each clip's end as [`~evaluation.frames.frame_scores`] cuts them (a shorter clip
    is repeat-padded, a longer one cropped from its start)."""
    extractor = processor.feature_extractor
    step = extractor.max_length_s / num_frames
    edges = torch.arange(num_frames + 1, dtype=torch.float64, device=device) * step
    durations = torch.tensor(
        [min(n / extractor.sampling_rate, extractor.max_length_s) for n in num_samples],
        dtype=torch.float64,
        device=device,
    )
    lengths = (torch.minimum(edges[None, 1:], durations[:, None]) - edges[None, :-1]).clamp(min=0)
    return edges, lengths


def temporal_batch_loss(
    model,
    processor,
    examples: Sequence[TemporalExample],
    hard_negative_weight: float = 1.0,
    order_loss_weight: float = 0.0,
    order_scale_seconds: float = 0.5,
    return_terms: bool = False,
    contrastive_loss_weight: float = 1.0,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """Embed a batch of composite examples (captions and hard-negative captions) and return its TNCE loss (times
    `contrastive_loss_weight`), plus `order_loss_weight` times the frame-grounded order term ([`frame_order_loss`])
    when that weight is not 0 (at 0 the term is not computed: with the defaults the loss is exactly the TNCE).
    `return_terms`: also a dict of the terms' unweighted values (`"tnce"`, and `"order"` when computed)."""
    max_negatives = max(1, max(len(e.negatives) for e in examples))
    embedded = embed_audio(
        model, processor, [e.audio for e in examples], batch_size=len(examples), with_grad=True
    )
    audio = embedded.clip_embeds
    negative_captions = [
        e.negatives[h][0] if h < len(e.negatives) else e.caption
        for e in examples
        for h in range(max_negatives)
    ]
    # Captions and negatives in one text forward; padded negative slots reuse the caption and are masked by key -1.
    all_captions = [e.caption for e in examples] + negative_captions
    texts = embed_text(
        model, processor, all_captions, batch_size=len(all_captions), with_grad=True
    ).text_embeds
    captions, negatives = (
        texts[: len(examples)],
        texts[len(examples) :].view(len(examples), max_negatives, -1),
    )
    keys, negative_keys = key_ids(examples, max_negatives)
    device = audio.device
    loss = temporal_contrastive_loss(
        audio,
        captions,
        negatives,
        keys.to(device),
        negative_keys.to(device),
        logit_scale(model),
        hard_negative_weight,
    )
    terms = {"tnce": loss.item()} if return_terms else {}
    if contrastive_loss_weight != 1:  # 0 keeps the graph (a zero gradient) for batches without an order term
        loss = contrastive_loss_weight * loss
    if order_loss_weight != 0:
        order = frame_order_loss(
            model, processor, examples, embedded.frame_embeds, embedded.frame_mask, order_scale_seconds
        )
        if order is not None:
            loss = loss + order_loss_weight * order
            if return_terms:
                terms["order"] = order.item()
    return (loss, terms) if return_terms else loss


# ---------------------------------------------------------------------------------------------------------------
# ZSTE-style zero-shot temporal evaluation
# ---------------------------------------------------------------------------------------------------------------


def temporal_candidates(
    relation: str, a: str, b: str, templates: Mapping[str, str] | None = None
) -> tuple[list[str], int]:
    """The ZSTE candidate captions for pair `(a, b)` and the index of the true one for `relation`'s audio.

    Candidates: order, reversed order, simultaneous, single a, single b. The audio of `"before"` and `"after"` is
    "a then b": the order captions are worded "a before b" / "b before a" for `"before"`, "b after a" / "a after b"
    for `"after"`. `"while"` is the overlay, `"single"` clip a alone.
    """
    if relation == "after":
        order = [relation_caption("after", b, a, templates), relation_caption("after", a, b, templates)]
    else:
        order = [relation_caption("before", a, b, templates), relation_caption("before", b, a, templates)]
    candidates = order + [
        relation_caption("while", a, b, templates),
        relation_caption("single", a, None, templates),
        relation_caption("single", b, None, templates),
    ]
    truth = {"before": 0, "after": 0, "while": 2, "single": 3}[relation]
    return candidates, truth


@torch.no_grad()
def evaluate_temporal(
    model,
    processor,
    dataset: datasets.Dataset,
    *,
    num_pairs: int = 100,
    pairs: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    segment_seconds: float = 5.0,
    gap_seconds: float | tuple[float, float] = 0.0,
    templates: Mapping[str, str] | None = None,
    batch_size: int = 16,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    noise_snr_db: float | None = None,
    calibration: RelationCalibration | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Zero-shot temporal accuracy (ZSTE-style): pick the best of 5 candidate captions for composite clips.

    For each of `num_pairs` draws (an allowed class pair in random order, a random clip of each class, determined
    by `seed`), four audios are built (see [`temporal_candidates`]): "a then b" scored against "before" and
    "after" wordings, the overlay, and clip a alone. The prediction is the candidate with the highest cosine.

    The two-event audios are also scored 3-way (order, reversed order, simultaneous: the first three candidates) by
    two paths: the global cosine, and, for models with frames, the training-free frame-grounded relation score
    ([`~temporal_relations.score_relation`]: each candidate parsed, its phrases grounded with the frame-text
    cosines, the relation scored from the curves). A candidate counts as chosen only when it scores strictly above
    the others (ties count as wrong).

    Args:
        model: an MGA-CLAP (or transformers CLAP) model; `processor` its processor.
        dataset (`datasets.Dataset`): labelled clips with `audio_column` and `label_column` (ESC-50 style).
        pairs (`Sequence[tuple[int, int]]`, *optional*): allowed class pairs (label indices), e.g. the held-out
            pairs of [`split_class_pairs`]; default all pairs of distinct classes.
        segment_seconds, gap_seconds: the composite layout ([`CompositeLayout`], in seconds); a negative gap
            overlaps the end of the first clip with the start of the second (above `-segment_seconds`). A range
            `(low, high)` draws each pair's gap uniformly from it (seeded by `seed`), e.g. `(-2, -0.5)` for
            overlaps of 0.5 to 2 s.
        label_names: class names for integer labels (default: the `ClassLabel` names, else the integers).
        noise_snr_db (`float`, *optional*): white Gaussian noise mixed into every composite at this signal-to-noise
            ratio (dB, against the composite's mean power; seeded by `seed`). Default: none.
        calibration ([`~temporal_relations.RelationCalibration`], *optional*): constants of the frame-grounded
            probabilities (they do not change the order decision).
        progress (`bool`): progress bars on stderr: the clips decoded, then the composite clips scored.

    Returns:
        `dict`: `accuracy_{before,after,while,single}` (5-way), `accuracy` (their mean), `order_accuracy` (on "a then
        b", the true order against the reversed one only, before and after wordings pooled; chance 0.5), the 3-way
        `relation_accuracy` (mean over before / after / while; chance 1/3) and `while_vs_then_accuracy` (whether the
        chosen caption is simultaneous exactly when the audio is the overlay, mean over the three; chance 0.5), and
        the same three with the frame-grounded path as `frame_order_accuracy`, `frame_relation_accuracy`,
        `frame_while_vs_then_accuracy` (for models with frames), and `num_pairs`.
    """
    low, high = (gap_seconds, gap_seconds) if np.isscalar(gap_seconds) else gap_seconds
    if low > high:
        raise ValueError(f"`gap_seconds` range must be (low, high) with low <= high, got {gap_seconds!r}.")
    _layout(processor, segment_seconds, low)  # validates the range before any decoding
    was_training = model.training
    model.eval()
    draws = _labelled_draws(
        processor, dataset, num_pairs, pairs, seed, audio_column, label_column, label_names, progress
    )
    noise_rng = np.random.default_rng([seed, 1])
    gaps = (
        np.random.default_rng([seed, 2]).uniform(low, high, len(draws)) if low < high else [low] * len(draws)
    )
    items = []  # (relation, audio, candidates, truth)
    for (a, b, clip_a, clip_b), gap in zip(draws, gaps, strict=True):
        layout = _layout(processor, segment_seconds, float(gap), templates)
        sequence = build_temporal_example(clip_a, a, clip_b, b, "before", layout).audio
        overlay = build_temporal_example(clip_a, a, clip_b, b, "while", layout).audio
        single = build_temporal_example(clip_a, a, None, None, "single", layout).audio
        if noise_snr_db is not None:
            sequence, overlay, single = (
                _add_noise(x, noise_snr_db, noise_rng) for x in (sequence, overlay, single)
            )
        for relation, audio in (
            ("before", sequence),
            ("after", sequence),
            ("while", overlay),
            ("single", single),
        ):
            items.append((relation, audio, *temporal_candidates(relation, a, b, templates)))

    correct = {r: [] for r in EVALUATION_RELATIONS}
    hits = {path: _RelationHits() for path in ("", "frame_")}
    bar = tqdm(total=len(items), desc="Temporal composites", unit="clips", disable=not progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        embedded = embed_audio(model, processor, [item[1] for item in chunk], batch_size=batch_size)
        texts = embed_text(model, processor, [c for item in chunk for c in item[2]]).text_embeds
        scores = torch.einsum("nd,ncd->nc", embedded.clip_embeds, texts.view(len(chunk), 5, -1))  # (n, 5)
        for index, ((relation, audio, candidates, truth), row) in enumerate(zip(chunk, scores, strict=True)):
            correct[relation].append(int(row.argmax()) == truth)
            if relation not in TWO_EVENT_RELATIONS:
                continue
            hits[""].add(relation, row[:3].tolist(), truth)
            if embedded.frame_embeds is not None:
                frames = (
                    embedded.frame_embeds[index].cpu() if len(audio) <= _layout_limit(processor) else None
                )
                probabilities = _frame_relation_scores(
                    model, processor, audio, candidates[:3], frames, calibration
                )
                hits["frame_"].add(relation, probabilities, truth)
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    metrics = {f"accuracy_{r}": float(np.mean(v)) for r, v in correct.items()}
    metrics["accuracy"] = float(np.mean([metrics[f"accuracy_{r}"] for r in EVALUATION_RELATIONS]))
    for path, path_hits in hits.items():
        metrics.update(path_hits.metrics(path))
    metrics["num_pairs"] = len(draws)
    return metrics


def _labelled_draws(
    processor,
    dataset: datasets.Dataset,
    num_pairs: int,
    pairs: Sequence[tuple[int, int]] | None,
    seed: int,
    audio_column: str,
    label_column: str,
    label_names: Sequence[str] | None,
    progress: bool,
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """`num_pairs` draws `(text a, text b, clip a, clip b)` of [`sample_pair_clips`] (all pairs by default), the clips
    decoded at the model's rate."""
    names = label_names if label_names is not None else class_names_of(dataset, label_column)
    labels = list(dataset[label_column])
    label_indices, classes = class_indices(labels, names)
    if pairs is None:
        pairs = list(itertools.combinations(range(len(classes)), 2))
    draws = sample_pair_clips(label_indices, pairs, num_pairs, np.random.default_rng(seed))
    rate = processor.feature_extractor.sampling_rate
    waveforms = load_waveforms(dataset, audio_column, rate, progress=progress)
    return [
        (label_text(labels[i], names), label_text(labels[j], names), waveforms[i], waveforms[j])
        for i, j in draws
    ]


def _layout(processor, segment_seconds: float, gap_seconds: float, templates=None) -> CompositeLayout:
    """The composite layout in samples at the model's rate (a negative gap overlaps the two clips)."""
    if not gap_seconds > -segment_seconds:
        raise ValueError(
            f"`gap_seconds` must be above -segment_seconds ({-segment_seconds:g}), got {gap_seconds!r}."
        )
    rate = processor.feature_extractor.sampling_rate
    return CompositeLayout(int(round(segment_seconds * rate)), int(round(gap_seconds * rate)), templates)


@torch.no_grad()
def fit_temporal_calibration(
    model,
    processor,
    dataset: datasets.Dataset,
    *,
    num_pairs: int = 100,
    pairs: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    segment_seconds: float = 5.0,
    gap_seconds: float = 0.0,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    progress: bool = False,
) -> RelationCalibration:
    """Fit the frame-grounded relation probabilities on composites of labelled clips: the trained relation head
    ([`~temporal_relations.fit_relation_calibration`]; the model itself is not changed).

    Each draw gives three labelled pairs from two composites: "a then b" read as `(a, b)` (before) and as `(b, a)`
    (after), and the overlay (simultaneous). Use clips and class pairs kept apart from any evaluation (e.g. the
    training pairs of [`split_class_pairs`], on the training stream).

    Args: as [`evaluate_temporal`].

    Returns:
        [`~temporal_relations.RelationCalibration`].
    """
    layout = _layout(processor, segment_seconds, gap_seconds)
    was_training = model.training
    model.eval()
    draws = _labelled_draws(
        processor, dataset, num_pairs, pairs, seed, audio_column, label_column, label_names, progress
    )
    margins, co_activations, truths = [], [], []
    for a, b, clip_a, clip_b in tqdm(
        draws, desc="Calibration composites", unit="pairs", disable=not progress
    ):
        text = embed_text(model, processor, [a, b], return_word_embeds=False).text_embeds.cpu()
        for relation in ("before", "while"):
            audio = build_temporal_example(clip_a, a, clip_b, b, relation, layout).audio
            similarity, boundaries = frame_scores(model, processor, audio, text)
            forward = pair_statistics(similarity[:, 0], similarity[:, 1], boundaries)
            margins.append(forward["margin"])
            co_activations.append(forward["co_activation"])
            truths.append("simultaneous" if relation == "while" else "before")
            if relation == "before":  # the same audio read as (b, a): the other order, for balance
                margins.append(-forward["margin"])
                co_activations.append(forward["co_activation"])
                truths.append("after")
    model.train(was_training)
    return fit_relation_calibration(margins, co_activations, truths)


def _layout_limit(processor) -> int:
    """Samples of the model's input (10 s): longer composites are scored by the windowed frame path."""
    extractor = processor.feature_extractor
    return int(round(extractor.max_length_s * extractor.sampling_rate))


def _add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`audio` plus white Gaussian noise `snr_db` dB below its mean power."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    noise = rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


def _frame_relation_scores(
    model,
    processor,
    audio: np.ndarray,
    captions: Sequence[str],
    frames: torch.Tensor | None,
    calibration: RelationCalibration | None,
) -> list[float]:
    """Frame-grounded probabilities of `captions` (parsed; their phrases grounded in `audio`'s frames).

    Args:
        audio (`np.ndarray` of shape `(samples,)`): the composite.
        captions (`Sequence[str]`): relation captions over the same phrases.
        frames (`torch.Tensor` of shape `(T, D)`, *optional*): the clip's normalised frames, already embedded.
    """
    relations = [parse_relation(caption) for caption in captions]
    phrases = list(dict.fromkeys(event for relation in relations for event in relation.events))
    text = embed_text(model, processor, phrases, return_word_embeds=False).text_embeds.cpu()
    similarity, boundaries = frame_scores(model, processor, audio, text, frames)
    scored = score_relations(relations, similarity, boundaries, phrases, calibration=calibration)
    return [result["score"] for result in scored]


@dataclass
class _RelationHits:
    """Per two-event relation: 3-way hits, while-vs-then hits; order hits on the sequence audio."""

    relation: dict[str, list[bool]] = field(default_factory=lambda: {r: [] for r in TWO_EVENT_RELATIONS})
    while_vs_then: dict[str, list[bool]] = field(default_factory=lambda: {r: [] for r in TWO_EVENT_RELATIONS})
    order: list[bool] = field(default_factory=list)

    def add(self, relation: str, scores: Sequence[float], truth: int) -> None:
        """`scores` of (order, reversed order, simultaneous); a choice needs a strict maximum."""
        chosen = [k for k in range(3) if all(scores[k] > scores[j] for j in range(3) if j != k)]
        self.relation[relation].append(chosen == [truth])
        self.while_vs_then[relation].append(bool(chosen) and (chosen[0] == 2) == (truth == 2))
        if relation != "while":
            self.order.append(scores[0] > scores[1])

    def metrics(self, prefix: str) -> dict[str, float]:
        if not self.order:
            return {}
        return {
            f"{prefix}order_accuracy": float(np.mean(self.order)),
            f"{prefix}relation_accuracy": float(np.mean([np.mean(v) for v in self.relation.values()])),
            f"{prefix}while_vs_then_accuracy": float(
                np.mean([np.mean(v) for v in self.while_vs_then.values()])
            ),
        }


__all__ = [
    "DEFAULT_TEMPLATES",
    "ClipPair",
    "CompositeLayout",
    "EVALUATION_RELATIONS",
    "RELATIONS",
    "TemporalExample",
    "build_temporal_example",
    "evaluate_temporal",
    "fit_temporal_calibration",
    "frame_order_loss",
    "hard_negatives",
    "key_ids",
    "relation_caption",
    "relation_key",
    "sample_pair_clips",
    "sequence_order",
    "split_class_pairs",
    "stage_a_group",
    "stage_b_group",
    "temporal_batch_loss",
    "temporal_candidates",
    "temporal_contrastive_loss",
]
