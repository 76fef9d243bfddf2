"""Training-free temporal relations ("a before b", "a while b", ...) from MGA-CLAP's frame-level grounding.

The global embeddings are order-blind: the audio side max-pools over frames and the text side over word pieces, so
"a then b" and "b then a" embed almost identically (`benchmarks/benchmark_temporal_order.py` measures it). MGA-CLAP's
frames, however, line up with sound events in time. Here a caption relating events is parsed into event phrases and a
relation ([`parse_relation`]), each phrase is grounded with the frame-text cosine (the SED path), and the relation is
scored from the activation curves ([`score_relation`]).

**Grammar** (connectives matched case-insensitively as whole words; whitespace collapsed; a trailing `.`, `!` or `;`
dropped). A caption uses one kind of connective:

    sequence      A before B [before C ...]              -> A, B, C
                  A after B [after C ...]                -> ..., C, B, A (each event after the next one named)
                  [first] A then B / A, then B / A and then B / A followed by B
                  A, B, then C / A, B and then C / A then B then C    -> A, B, C (commas list events)
                  B follows A                            -> A, B (two events)
    simultaneous  A while B / A during B / A at the same time as B [while C ...]

What it does **not** parse (a [`RelationParseError`], never a guess): a caption with one event or without a
connective ("a dog barks", "a dog and a cat"), mixed kinds ("a before b while c", "a then b after c"), negation
("not", "never", "n't"), amounts of time ("two seconds after"), the connectives "when", "until", "since", "once",
"as soon as", "meanwhile", "as" (ambiguous), a comma inside a phrase of a before / after / follows / while caption
(only "then" lists read commas as separators), and empty phrases. Every connective word is read as a connective:
"a dog barks and then stops" is two events, "a dog barks" and "stops".

**Scoring.** Per consecutive pair of events `(i, j)`, from their curves of frame cosines ([`pair_statistics`]):

- each curve is centred on its mean over the clip (raw cosines of different phrases have different offsets); the
  contrast `d(t) = c_i(t) - c_j(t)` says where phrase `i` wins. Event `i`'s position is the centre of mass of
  `max(d, 0)` (weighted by frame length), event `j`'s that of `max(-d, 0)` (`order_by="center"`), or the time at which
  that mass reaches `onset_mass` of its total (`order_by="onset"`); the order margin is `position_j - position_i`
  in seconds. The contrast, not each curve alone, because the frames of a small model respond to "any sound" as
  well as to the phrase: alone, both curves rise wherever either event sounds;
- the co-activation is the Pearson correlation of the two curves (weighted by frame length): near 1 when they rise
  and fall together, as simultaneous events do;
- `P(simultaneous) = sigmoid((co_activation - co_activation_midpoint) / co_activation_scale)`,
  `P(i before j) = (1 - P(simultaneous)) sigmoid(margin / order_scale_seconds)`, `P(j before i)` the rest: a
  distribution over the three relations of the pair.

A sequence's score is the product of its pairs' `P(before)`, a simultaneous caption's the product of their
`P(simultaneous)` (pairs taken as independent). [`RelationCalibration`] holds the three constants: the order
*decision* does not depend on them, only the probabilities and the while-vs-then decision do. The order scale
(0.5 s) is set a priori; the co-activation midpoint and scale (0.9, 0.05) were picked by hand on composites of the
*training* class pairs and clips of the embedded default model, never on the held-out pairs the benchmark reports.
They are not a fitted calibration, and the while-vs-then decision stays weak on that small model (README).

This module is copied next to the weights as remote code (the pipeline imports it): it imports only torch, numpy,
transformers and flat sibling modules.
"""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .processing_mgaclap import format_queries
from .sound_event_detection import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_WINDOW_BATCH_SIZE,
    frame_similarity_of_queries,
)

SEQUENCE, SIMULTANEOUS = "sequence", "simultaneous"
ORDER_BY = ("center", "onset")

# Surface connective -> its kind. Longer alternatives first, so that "and then" wins over "then".
_CONNECTIVES = {
    "at the same time as": "while",
    "followed by": "then",
    "and then": "then",
    "then": "then",
    "before": "before",
    "after": "after",
    "follows": "follows",
    "while": "while",
    "during": "while",
}
_CONNECTIVE_PATTERN = re.compile(
    r"\s*,?\s*\b(" + "|".join(re.escape(c).replace(r"\ ", r"\s+") for c in _CONNECTIVES) + r")\b\s*",
    re.IGNORECASE,
)
# Checked on the caption with its connectives blanked out ("as" would otherwise refuse "at the same time as").
_REFUSED = [
    (re.compile(r"\b(not|never|no longer)\b|n't\b", re.IGNORECASE), "negation"),
    (
        re.compile(
            r"\b(\d+(\.\d+)?|a|an|one|two|three|four|five|six|seven|eight|nine|ten|half a|a few|several)\s+"
            r"(seconds?|minutes?|hours?|s|ms|milliseconds?)\s*(\||later\b|earlier\b)",
            re.IGNORECASE,
        ),
        "an amount of time",
    ),
    (
        re.compile(r"\b(when|until|since|once|as soon as|meanwhile|as)\b", re.IGNORECASE),
        "an unsupported connective",
    ),
]


class RelationParseError(ValueError):
    """A caption outside the grammar of [`parse_relation`] (module docstring)."""


@dataclass(frozen=True)
class TemporalRelation:
    """A parsed caption.

    Attributes:
        caption (`str`): the caption as given.
        events (`tuple[str, ...]`): the event phrases, in the asserted time order for a sequence (so "a after b"
            gives `("b", "a")`), in caption order for simultaneous events; at least two.
        relation (`str`): `"sequence"` or `"simultaneous"`.
    """

    caption: str
    events: tuple[str, ...]
    relation: str


def _cannot_parse(caption: str, why: str) -> RelationParseError:
    return RelationParseError(
        f"Cannot parse {caption!r} as a temporal relation: {why}. Supported: 'A before B', 'A after B', 'A, then B', "
        "'A followed by B', 'B follows A', 'A while B', 'A during B', 'A at the same time as B', and lists such as "
        "'A, B, then C' (see transformers_mgaclap.temporal_relations)."
    )


def _clean(phrase: str) -> str:
    """A phrase without surrounding blanks and list punctuation."""
    return phrase.strip().strip(",;").strip()


def parse_relation(caption: str) -> TemporalRelation:
    """Parse a caption relating sound events into its event phrases and relation (grammar: module docstring).

    Args:
        caption (`str`): e.g. `"dog barking before car horn"`, `"a siren, then thunder"`, `"rain while birds sing"`.

    Returns:
        [`TemporalRelation`].

    Raises:
        [`RelationParseError`] (a `ValueError`): a caption the grammar does not cover, saying why.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise RelationParseError(f"A relation caption must be a non-empty string, got {caption!r}.")
    text = " ".join(caption.split()).rstrip(".!;").strip()
    blanked = _CONNECTIVE_PATTERN.sub(" | ", text)
    for pattern, what in _REFUSED:
        found = pattern.search(blanked)
        if found:
            raise _cannot_parse(caption, f"it holds {what} ({found.group(0)!r})")
    parts = _CONNECTIVE_PATTERN.split(text)
    phrases, connectives = parts[0::2], [_CONNECTIVES[" ".join(c.lower().split())] for c in parts[1::2]]
    if not connectives:
        raise _cannot_parse(caption, "it has no temporal connective")
    kinds = set(connectives)
    if len(kinds) > 1:
        raise _cannot_parse(caption, f"it mixes connectives {sorted(kinds)}")
    kind = connectives[0]
    if kind == "then":
        phrases[0] = re.sub(r"^first\b\s*,?", "", phrases[0].strip(), flags=re.IGNORECASE)
        phrases = [item for phrase in phrases for item in phrase.split(",")]
        phrases = [re.sub(r"^and\s+", "", _clean(p), flags=re.IGNORECASE) for p in phrases]
    elif any("," in _clean(p) for p in phrases):
        raise _cannot_parse(caption, "a phrase holds a comma (only 'then' lists read commas as separators)")
    events = [_clean(p) for p in phrases]
    if any(not event for event in events):
        raise _cannot_parse(caption, "an event phrase is empty")
    if kind == "follows" and len(events) != 2:
        raise _cannot_parse(caption, "'follows' relates exactly two events")
    if kind in ("after", "follows"):
        events.reverse()
    relation = SIMULTANEOUS if kind == "while" else SEQUENCE
    return TemporalRelation(caption, tuple(events), relation)


def parse_relations(captions: str | Iterable[str]) -> list[TemporalRelation]:
    """[`parse_relation`] for one caption or a list of them (all parsed before anything is computed).

    Raises:
        [`RelationParseError`]: an empty list, or the first caption that does not parse.
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise RelationParseError("`relations` is empty: give at least one caption such as 'a before b'.")
    return [parse_relation(caption) for caption in captions]


def relation_phrases(relations: Sequence[TemporalRelation]) -> list[str]:
    """The distinct event phrases of parsed relations, in order of first appearance (each grounded once)."""
    return list(dict.fromkeys(event for relation in relations for event in relation.events))


# ---------------------------------------------------------------------------------------------------------------
# Scoring from activation curves
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelationCalibration:
    """The constants that turn order margins and co-activations into probabilities (module docstring).

    Attributes:
        order_scale_seconds (`float`): a margin of this many seconds gives odds of e : 1 for the order.
        co_activation_midpoint (`float`): the co-activation at which "simultaneous" and "in sequence" are equally
            likely.
        co_activation_scale (`float`): the co-activation change that multiplies those odds by e.
    """

    order_scale_seconds: float = 0.5
    co_activation_midpoint: float = 0.9
    co_activation_scale: float = 0.05

    def __post_init__(self):
        for name in ("order_scale_seconds", "co_activation_midpoint", "co_activation_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if self.order_scale_seconds <= 0 or self.co_activation_scale <= 0:
            raise ValueError("`order_scale_seconds` and `co_activation_scale` must be > 0.")


def _frame_lengths(
    num_frames: int, frame_boundaries: torch.Tensor, frame_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundaries `(T + 1,)` as float64 and each frame's length in seconds `(T,)`, 0 on masked frames."""
    edges = torch.as_tensor(frame_boundaries).detach().cpu().double()
    if edges.shape != (num_frames + 1,):
        raise ValueError(f"`frame_boundaries` must be ({num_frames + 1},), got {tuple(edges.shape)}.")
    lengths = (edges[1:] - edges[:-1]).clamp(min=0)
    if frame_mask is not None:
        lengths = lengths * torch.as_tensor(frame_mask).detach().cpu().flatten().bool()
    if not bool((lengths > 0).any()):
        raise ValueError("No valid frame to ground the events in.")
    return edges, lengths


def event_positions(
    distributions: torch.Tensor,
    frame_boundaries: torch.Tensor,
    order_by: str = "center",
    onset_mass: float = 0.1,
) -> torch.Tensor:
    """Where each event is, in seconds: its centre of mass, or the time its distribution reaches `onset_mass`.

    Args:
        distributions (`torch.Tensor` of shape `(frames, events)`): each column sums to 1 (`"center"` also takes
            `(..., frames, events)` with boundaries `(..., frames + 1)`, and keeps the autograd graph).
        frame_boundaries (`torch.Tensor` of shape `(frames + 1,)`): seconds.
        order_by (`str`): `"center"` or `"onset"` (mass spread uniformly within a frame, so the onset interpolates).
        onset_mass (`float`): in `(0, 1)`, the share of mass before the onset.

    Returns:
        `torch.DoubleTensor` of shape `(events,)` (`(..., events)` for batched `"center"` input).
    """
    if order_by not in ORDER_BY:
        raise ValueError(f"`order_by` must be one of {ORDER_BY}, got {order_by!r}.")
    edges = torch.as_tensor(frame_boundaries).double()
    if order_by == "center":  # batched over leading dimensions, differentiable (soft_order_margin)
        centres = (edges[..., :-1] + edges[..., 1:]) / 2
        return (distributions * centres[..., None]).sum(-2)
    if not 0 < onset_mass < 1:
        raise ValueError(f"`onset_mass` must be in (0, 1), got {onset_mass!r}.")
    cumulative = torch.cat(
        [torch.zeros(1, distributions.shape[1], dtype=torch.float64), distributions.cumsum(0)]
    )
    onsets = []
    for column in cumulative.t():  # piecewise-linear cumulative mass, inverted at onset_mass
        frame = int(
            torch.searchsorted(column[1:].contiguous(), torch.tensor(onset_mass, dtype=torch.float64))
        )
        frame = min(frame, len(edges) - 2)
        share = (onset_mass - column[frame]) / (column[frame + 1] - column[frame]).clamp(min=1e-300)
        onsets.append(edges[frame] + share.clamp(0, 1) * (edges[frame + 1] - edges[frame]))
    return torch.stack(onsets)


def contrast_distributions(
    curves: torch.Tensor, frame_lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each of two phrases wins: the shared core of [`pair_statistics`] and [`soft_order_margin`].

    Each curve is centred on its frame-length-weighted mean; the contrast `d = c_first - c_second` (zeroed at float32
    rounding level) gives the first event the distribution `max(d, 0) * frame length`, the second `max(-d, 0) * frame
    length`, each normalised (a side that never wins gets the frame lengths, i.e. uniform). Batched over leading
    dimensions, any dtype and device, and differentiable (the TeminAL order loss trains through it).

    Args:
        curves (`torch.Tensor` of shape `(..., frames, 2)`): frame-text cosines of the two phrases.
        frame_lengths (`torch.Tensor` of shape `(..., frames)` or `(frames,)`): seconds, 0 on masked frames; at
            least one positive per item.

    Returns:
        `(distributions, centred)`, both `(..., frames, 2)`: each column of `distributions` sums to 1.
    """
    lengths = frame_lengths.to(curves.dtype)
    weights = lengths / lengths.sum(-1, keepdim=True)
    centred = curves - (curves * weights[..., None]).sum(-2, keepdim=True)
    contrast = centred[..., 0] - centred[..., 1]
    # Cosines arrive in float32: differences at its rounding level are no evidence of either phrase winning.
    tolerance = 1e-6 * centred.detach().abs().amax(dim=(-2, -1))[..., None]
    contrast = torch.where(contrast.abs() <= tolerance, 0.0, contrast)
    mass = torch.stack([contrast.clamp(min=0), (-contrast).clamp(min=0)], dim=-1) * lengths[..., None]
    empty = mass.sum(-2, keepdim=True) <= 0
    mass = torch.where(empty, lengths[..., None].expand_as(mass), mass)
    return mass / mass.sum(-2, keepdim=True), centred


def soft_order_margin(
    first: torch.Tensor,
    second: torch.Tensor,
    frame_boundaries: torch.Tensor,
    frame_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """The centre-of-mass order margin of [`pair_statistics`] (seconds, positive when `first` comes first), batched
    and differentiable: the order term of TeminAL post-training (`--order_loss_weight`) is a logistic loss on it.

    Args:
        first, second (`torch.Tensor` of shape `(..., frames)`): frame-text cosines of the two phrases.
        frame_boundaries (`torch.Tensor` of shape `(..., frames + 1)` or `(frames + 1,)`): seconds.
        frame_lengths (`torch.Tensor` of shape `(..., frames)`, *optional*): each frame's weight in seconds, 0 on
            masked frames (default: the boundaries' differences).

    Returns:
        `torch.DoubleTensor` of shape `(...)`: second position minus first position, in seconds.
    """
    edges = torch.as_tensor(frame_boundaries, device=first.device).double()
    if frame_lengths is None:
        frame_lengths = (edges[..., 1:] - edges[..., :-1]).clamp(min=0)
    distributions, _ = contrast_distributions(torch.stack([first, second], dim=-1), frame_lengths)
    positions = event_positions(distributions, edges, "center")
    return positions[..., 1] - positions[..., 0]


def pair_statistics(
    first: torch.Tensor,
    second: torch.Tensor,
    frame_boundaries: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    order_by: str = "center",
    onset_mass: float = 0.1,
) -> dict:
    """Order margin and co-activation of two events from their frame-text curves (module docstring).

    Each curve is centred on its mean over the valid frames (raw cosines of different phrases have different
    offsets), weighted by frame length; the contrast `d = c_first - c_second` says where the first phrase wins.

    Args:
        first, second (`torch.Tensor` of shape `(frames,)`): frame-text cosines of the two phrases.
        frame_boundaries (`torch.Tensor` of shape `(frames + 1,)`): seconds.
        frame_mask (`torch.Tensor` of shape `(frames,)`, *optional*): 1 on frames of real audio.
        order_by, onset_mass: see [`event_positions`].

    Returns:
        `dict`: `"positions"` (seconds: each event's position in the distribution `max(±d, 0) * frame length`,
        normalised; a side that never wins gets the uniform distribution), `"margin"` (second minus first position,
        seconds) and `"co_activation"` (the frame-length-weighted Pearson correlation of the two curves, in `[-1, 1]`: 1 for
        curves that rise and fall together, as simultaneous events do, whatever the strength of each phrase's
        response; 1 when both are flat, since nothing separates them, 0 when only one is).
    """
    curves = torch.stack([torch.as_tensor(first), torch.as_tensor(second)], dim=1).detach().cpu().double()
    edges, lengths = _frame_lengths(curves.shape[0], frame_boundaries, frame_mask)
    weights = lengths / lengths.sum()
    distributions, centred = contrast_distributions(curves, lengths)
    positions = event_positions(distributions, edges, order_by, onset_mass)
    variances = (centred**2 * weights[:, None]).sum(0)
    covariance = float((centred[:, 0] * centred[:, 1] * weights).sum())
    flat = variances <= 1e-24
    if bool(flat.any()):  # an ungrounded phrase moves with nothing; two of them cannot be told apart
        co_activation = 1.0 if bool(flat.all()) else 0.0
    else:
        co_activation = max(-1.0, min(1.0, covariance / float(variances.prod().sqrt())))
    return {
        "positions": positions.tolist(),
        "margin": float(positions[1] - positions[0]),
        "co_activation": co_activation,
    }


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value)) if value >= 0 else math.exp(value) / (1.0 + math.exp(value))


def pair_probabilities(
    margin: float, co_activation: float, calibration: RelationCalibration
) -> dict[str, float]:
    """`{"before", "after", "simultaneous"}` probabilities of a pair, which sum to 1 (module docstring)."""
    simultaneous = _sigmoid(
        (co_activation - calibration.co_activation_midpoint) / calibration.co_activation_scale
    )
    forward = _sigmoid(margin / calibration.order_scale_seconds)
    return {
        "before": (1 - simultaneous) * forward,
        "after": (1 - simultaneous) * (1 - forward),
        "simultaneous": simultaneous,
    }


# Labels of a pair `(i, j)` for [`fit_relation_calibration`].
PAIR_RELATIONS = ("before", "after", "simultaneous")


def fit_relation_calibration(
    margins: Sequence[float],
    co_activations: Sequence[float],
    labels: Sequence[str],
    prior_weight: float = 0.01,
    initial: RelationCalibration | None = None,
) -> RelationCalibration:
    """Fit the three constants by maximum likelihood on labelled pairs: a 3-parameter relation head over the
    grounded curves (the model stays as it is).

    Minimises the mean negative log-probability of each pair's true relation under [`pair_probabilities`], plus
    `prior_weight` times the squared distance of the log-scales to those of `initial` (the defaults): without it,
    pairs that one side of a threshold separates perfectly would drive a scale to 0 (certainty).

    Args:
        margins, co_activations (`Sequence[float]` of length `N`): [`pair_statistics`] of `N` pairs `(i, j)`.
        labels (`Sequence[str]` of length `N`): the truth of each pair, one of [`PAIR_RELATIONS`] (`"before"`: `i`
            sounds first).
        prior_weight (`float`): >= 0.
        initial ([`RelationCalibration`], *optional*): the starting point and the prior's centre.

    Returns:
        [`RelationCalibration`].
    """
    unknown = sorted(set(labels) - set(PAIR_RELATIONS))
    if unknown or not len(labels) == len(margins) == len(co_activations) or not labels:
        raise ValueError(
            f"Give one label of {PAIR_RELATIONS} per pair (got {len(labels)} labels for {len(margins)} margins and "
            f"{len(co_activations)} co-activations{f', unknown {unknown}' if unknown else ''})."
        )
    initial = initial or RelationCalibration()
    margin = torch.tensor(margins, dtype=torch.float64)
    co = torch.tensor(co_activations, dtype=torch.float64)
    truth = torch.tensor([PAIR_RELATIONS.index(label) for label in labels])
    start = torch.tensor(
        [
            math.log(initial.order_scale_seconds),
            initial.co_activation_midpoint,
            math.log(initial.co_activation_scale),
        ],
        dtype=torch.float64,
    )
    parameters = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([parameters], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        log_order, midpoint, log_co = parameters
        log_simultaneous = torch.nn.functional.logsigmoid((co - midpoint) / log_co.exp())
        log_sequence = torch.nn.functional.logsigmoid(-(co - midpoint) / log_co.exp())
        forward = margin / log_order.exp()
        log_p = torch.stack(
            [
                log_sequence + torch.nn.functional.logsigmoid(forward),
                log_sequence + torch.nn.functional.logsigmoid(-forward),
                log_simultaneous,
            ],
            dim=1,
        )
        prior = (log_order - start[0]) ** 2 + (log_co - start[2]) ** 2
        value = -log_p.gather(1, truth[:, None]).mean() + prior_weight * prior
        value.backward()
        return value

    optimizer.step(loss)
    log_order, midpoint, log_co = parameters.detach().tolist()
    return RelationCalibration(math.exp(log_order), midpoint, math.exp(log_co))


def score_relation(
    relation: TemporalRelation | str,
    similarity: torch.Tensor,
    frame_boundaries: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
    order_by: str = "center",
    onset_mass: float = 0.1,
    calibration: RelationCalibration | None = None,
) -> dict:
    """Score one relation from its events' frame-text curves.

    Args:
        relation ([`TemporalRelation`] or `str`): a parsed relation, or a caption to parse.
        similarity (`torch.Tensor` of shape `(frames, len(relation.events))`): the curve of each event, in the order
            of `relation.events`.
        frame_boundaries (`torch.Tensor` of shape `(frames + 1,)`): seconds.
        frame_mask (`torch.Tensor` of shape `(frames,)`, *optional*): 1 on frames of real audio.
        order_by, onset_mass: see [`event_positions`].
        calibration ([`RelationCalibration`], *optional*): the probability constants (default: the defaults).

    Returns:
        `dict` with `"caption"`, `"relation"`, `"events"` (the phrases), `"score"` (the probability of the relation,
        in `[0, 1]`), and per consecutive pair of events `"margins"` (seconds, positive when the pair is in the
        caption's order) and `"co_activations"` ([`pair_statistics`]).
    """
    if isinstance(relation, str):
        relation = parse_relation(relation)
    calibration = calibration or RelationCalibration()
    similarity = torch.as_tensor(similarity)
    if similarity.dim() != 2 or similarity.shape[1] != len(relation.events):
        raise ValueError(
            f"{relation.caption!r} has {len(relation.events)} events: `similarity` must be (frames, "
            f"{len(relation.events)}), got shape {tuple(similarity.shape)}."
        )
    margins, co_activations, score = [], [], 1.0
    for index in range(len(relation.events) - 1):
        pair = pair_statistics(
            similarity[:, index], similarity[:, index + 1], frame_boundaries, frame_mask, order_by, onset_mass
        )
        probabilities = pair_probabilities(pair["margin"], pair["co_activation"], calibration)
        score *= probabilities["before" if relation.relation == SEQUENCE else "simultaneous"]
        margins.append(pair["margin"])
        co_activations.append(pair["co_activation"])
    return {
        "caption": relation.caption,
        "relation": relation.relation,
        "events": list(relation.events),
        "score": score,
        "margins": margins,
        "co_activations": co_activations,
    }


def score_relations(
    relations: Sequence[TemporalRelation],
    similarity: torch.Tensor,
    frame_boundaries: torch.Tensor,
    phrases: Sequence[str],
    frame_mask: torch.Tensor | None = None,
    **options,
) -> list[dict]:
    """[`score_relation`] for several relations whose phrases are columns of one similarity matrix.

    Args:
        relations (`Sequence[TemporalRelation]`): parsed relations.
        similarity (`torch.Tensor` of shape `(frames, queries)`): frame-text cosines; column `q` is `phrases[q]`.
        frame_boundaries (`torch.Tensor` of shape `(frames + 1,)`), frame_mask (`(frames,)`, *optional*).
        phrases (`Sequence[str]`): the phrase of each column (every event of every relation among them).
        options: `order_by`, `onset_mass`, `calibration` of [`score_relation`].
    """
    column = {phrase: index for index, phrase in enumerate(phrases)}
    results = []
    for relation in relations:
        curves = similarity[:, [column[event] for event in relation.events]]
        results.append(score_relation(relation, curves, frame_boundaries, frame_mask, **options))
    return results


def ground_relations(
    model,
    processor,
    audio,
    relations: str | Iterable[str],
    *,
    sampling_rate: int | None = None,
    hypothesis_template: str = "{}",
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    progress: bool = False,
    **options,
) -> list[dict]:
    """Training-free temporal relations in a recording of any length: parse, ground each phrase (SED path), score.

    Example:

    ```python
    >>> ground_relations(model, processor, waveform, ["dog barking before car horn", "rain while thunder"])
    [{'caption': 'dog barking before car horn', 'relation': 'sequence', 'events': ['dog barking', 'car horn'],
      'score': 0.93, ...}, ...]
    ```

    Args:
        model: an [`MGAClapModel`]; `processor` its processor (or a pipeline).
        audio: any form of [`~audio_input.open_audio`] (an array `(samples,)` at `sampling_rate`, a path, bytes, ...).
        relations (`str` or `Iterable[str]`): captions ([`parse_relation`]); all are parsed before any audio is read.
        hypothesis_template (`str`): prompt of each phrase, `{}` where it goes (default: the bare phrase, as SED).
        sampling_rate, window_seconds, hop_seconds, batch_size, progress: see
            [`~sound_event_detection.compute_long_audio_frame_similarity`].
        options: `order_by`, `onset_mass`, `calibration` of [`score_relation`].

    Returns:
        `list[dict]`: one [`score_relation`] result per caption, in order.

    Raises:
        [`RelationParseError`]: a caption outside the grammar.
    """
    parsed = parse_relations(relations)
    phrases = relation_phrases(parsed)
    stitched = frame_similarity_of_queries(
        model,
        processor,
        audio,
        format_queries(phrases, hypothesis_template),
        sampling_rate=sampling_rate,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        batch_size=batch_size,
        progress=progress,
    )
    return score_relations(
        parsed, stitched.frame_similarity, stitched.frame_boundaries, phrases, stitched.frame_mask, **options
    )


__all__ = [
    "ORDER_BY",
    "PAIR_RELATIONS",
    "SEQUENCE",
    "SIMULTANEOUS",
    "RelationCalibration",
    "RelationParseError",
    "TemporalRelation",
    "event_positions",
    "contrast_distributions",
    "fit_relation_calibration",
    "ground_relations",
    "pair_probabilities",
    "pair_statistics",
    "parse_relation",
    "parse_relations",
    "relation_phrases",
    "score_relation",
    "score_relations",
    "soft_order_margin",
]
