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


def temporal_batch_loss(
    model, processor, examples: Sequence[TemporalExample], hard_negative_weight: float = 1.0
) -> torch.Tensor:
    """Embed a batch of composite examples (captions and hard-negative captions) and return its TNCE loss."""
    max_negatives = max(1, max(len(e.negatives) for e in examples))
    audio = embed_audio(
        model, processor, [e.audio for e in examples], batch_size=len(examples), with_grad=True
    )
    audio = audio.clip_embeds
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
    return temporal_contrastive_loss(
        audio,
        captions,
        negatives,
        keys.to(device),
        negative_keys.to(device),
        logit_scale(model),
        hard_negative_weight,
    )


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
    gap_seconds: float = 0.0,
    templates: Mapping[str, str] | None = None,
    batch_size: int = 16,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Zero-shot temporal accuracy (ZSTE-style): pick the best of 5 candidate captions for composite clips.

    For each of `num_pairs` draws (an allowed class pair in random order, a random clip of each class, determined
    by `seed`), four audios are built (see [`temporal_candidates`]): "a then b" scored against "before" and
    "after" wordings, the overlay, and clip a alone. The prediction is the candidate with the highest cosine.

    Args:
        model: an MGA-CLAP (or transformers CLAP) model; `processor` its processor.
        dataset (`datasets.Dataset`): labelled clips with `audio_column` and `label_column` (ESC-50 style).
        pairs (`Sequence[tuple[int, int]]`, *optional*): allowed class pairs (label indices), e.g. the held-out
            pairs of [`split_class_pairs`]; default all pairs of distinct classes.
        segment_seconds, gap_seconds: the composite layout ([`CompositeLayout`], in seconds).
        label_names: class names for integer labels (default: the `ClassLabel` names, else the integers).
        progress (`bool`): progress bars on stderr: the clips decoded, then the composite clips scored.

    Returns:
        `dict`: `accuracy_{before,after,while,single}` (5-way), `accuracy` (their mean), `order_accuracy` (on "a then
        b", the true order against the reversed one only, before and after wordings pooled; chance 0.5) and
        `num_pairs`.
    """
    was_training = model.training
    model.eval()
    names = label_names if label_names is not None else class_names_of(dataset, label_column)
    labels = list(dataset[label_column])
    label_indices, classes = class_indices(labels, names)
    if pairs is None:
        pairs = list(itertools.combinations(range(len(classes)), 2))
    draws = sample_pair_clips(label_indices, pairs, num_pairs, np.random.default_rng(seed))
    sampling_rate = processor.feature_extractor.sampling_rate
    waveforms = load_waveforms(dataset, audio_column, sampling_rate, progress=progress)
    layout = CompositeLayout(
        int(round(segment_seconds * sampling_rate)), int(round(gap_seconds * sampling_rate)), templates
    )

    items = []  # (relation, audio, candidates, truth)
    for first, second in draws:
        a, b = label_text(labels[first], names), label_text(labels[second], names)
        sequence = build_temporal_example(waveforms[first], a, waveforms[second], b, "before", layout).audio
        overlay = build_temporal_example(waveforms[first], a, waveforms[second], b, "while", layout).audio
        single = build_temporal_example(waveforms[first], a, None, None, "single", layout).audio
        for relation, audio in (
            ("before", sequence),
            ("after", sequence),
            ("while", overlay),
            ("single", single),
        ):
            items.append((relation, audio, *temporal_candidates(relation, a, b, templates)))

    correct = {r: [] for r in EVALUATION_RELATIONS}
    order_correct = []
    bar = tqdm(total=len(items), desc="Temporal composites", unit="clips", disable=not progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        audio = embed_audio(
            model, processor, [item[1] for item in chunk], batch_size=batch_size
        ).clip_embeds  # (n, D)
        texts = embed_text(model, processor, [c for item in chunk for c in item[2]]).text_embeds
        scores = torch.einsum("nd,ncd->nc", audio, texts.view(len(chunk), 5, -1))  # (n, 5)
        for (relation, _, _, truth), row in zip(chunk, scores, strict=True):
            correct[relation].append(int(row.argmax()) == truth)
            if relation in ("before", "after"):
                order_correct.append(bool(row[0] > row[1]))
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    metrics = {f"accuracy_{r}": float(np.mean(v)) for r, v in correct.items()}
    metrics["accuracy"] = float(np.mean([metrics[f"accuracy_{r}"] for r in EVALUATION_RELATIONS]))
    metrics["order_accuracy"] = float(np.mean(order_correct))
    metrics["num_pairs"] = len(draws)
    return metrics


__all__ = [
    "DEFAULT_TEMPLATES",
    "ClipPair",
    "CompositeLayout",
    "EVALUATION_RELATIONS",
    "RELATIONS",
    "TemporalExample",
    "build_temporal_example",
    "evaluate_temporal",
    "hard_negatives",
    "key_ids",
    "relation_caption",
    "relation_key",
    "sample_pair_clips",
    "split_class_pairs",
    "stage_a_group",
    "stage_b_group",
    "temporal_batch_loss",
    "temporal_candidates",
    "temporal_contrastive_loss",
]
