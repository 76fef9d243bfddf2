"""Validation of the reference annotations of the SED and grounding tasks, before any audio is decoded or embedded.

Every row is checked; the first invalid value stops the run with an [`InvalidReferenceError`] naming the row, the
field (`events[2].onset`, `segments[0].offset`, `phrase`), the rule and the value. With `skip_invalid=True` the rows
holding an invalid value are left out whole (the rest of an annotation with a broken event is not trusted to be
complete: its other events would score the broken event's sound as a false positive), and counted.

Rules, for an SED event `{"event_label", "onset", "offset"}` and a grounding segment `[onset, offset]` (seconds):

- onset and offset are finite numbers, `0 <= onset < offset`, and the onset lies before the end of the clip;
- an offset past the end of the clip is clipped to it (counted, logged), as the frame boundaries of the scores are:
  annotations often round the last offset up (10.0 for a 9.98 s clip);
- an event label (SED) and a phrase (grounding) are non-empty strings;
- SED: events of one class in a row neither overlap nor touch (sed_scores_eval asserts so); grounding: the segments
  of a row do not overlap (psds_eval refuses intersecting segments). `[0, 0]` is the official "no segment" marker of
  grounding and passes through (the metric ignores it).

SED labels that differ only by case, whitespace or `_` versus space ("Dog", "dog ", "DOG") give the same prompt, so
they are one class, named by the first spelling in row order, stripped of outer whitespace and with inner runs of
whitespace made single; its prompt is the one that spelling always had.

The clip durations come from the audio headers ([`~audio_input.open_audio`] on the undecoded cells reads the header
of a file or of file bytes, not the samples), and only for rows with something to check: that is the duration the
evaluation then decodes, whereas a duration column could be stale or in other units.
"""

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio_input import open_audio
from ..data.labels import label_text

logger = logging.getLogger(__name__)

_SKIP_HINT = (
    "Fix the dataset, or pass --skip_invalid_events (`skip_invalid_events=True`) to leave out the rows with an "
    "invalid reference and count them."
)
# Undecoded audio cells held in memory at a time while reading durations.
_HEADER_BATCH = 64


class InvalidReferenceError(ValueError):
    """A reference event or segment that breaks a rule of the module docstring.

    Attributes:
        row (`int`): the row of the dataset.
        field (`str`): where in the row, e.g. `events[2].onset`.
        rule (`str`): what the value must be.
        value: the offending value.
    """

    def __init__(self, row: int, field: str, rule: str, value: Any):
        self.row, self.field, self.rule, self.value = row, field, rule, value
        super().__init__(f"{self.problem} {_SKIP_HINT}")

    @property
    def problem(self) -> str:
        """The row, field, rule and value, without the advice."""
        return f"Row {self.row}, field '{self.field}': {self.rule}; got {self.value!r}."


@dataclass
class ValidatedReferences:
    """The references of the rows kept, ready for the metrics.

    Attributes:
        rows (`list[int]`): the dataset rows kept, in order.
        references (`list`): per kept row, its events (SED: dicts with canonical labels) or segments (grounding),
            offsets clipped to the clip's end.
        classes (`list[str]`): SED: the sorted canonical class names; grounding: empty.
        skipped (`list[str]`): per row left out, why (the message its error would have had).
        clipped_offsets (`int`): offsets past the clip's end clipped to it.
        merged_labels (`dict[str, list[str]]`): SED: canonical class -> its spellings, for classes spelled more than
            one way.
    """

    rows: list[int] = field(default_factory=list)
    references: list = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    clipped_offsets: int = 0
    merged_labels: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> dict:
        """What validation did, for `details.json`."""
        return {
            "evaluated_rows": len(self.rows),
            "skipped_rows": len(self.skipped),
            "skipped": self.skipped,
            "clipped_offsets": self.clipped_offsets,
            "merged_labels": self.merged_labels,
        }


def label_key(label: str) -> str:
    """What makes two labels one class: their prompt text up to case and whitespace."""
    return " ".join(label_text(label).split()).casefold()


def _seconds(value: Any, row: int, where: str) -> float:
    """A finite number of seconds (not a bool, a string or None)."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not math.isfinite(value):
        raise InvalidReferenceError(row, where, "must be a finite number of seconds", value)
    return float(value)


def _text(value: Any, row: int, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidReferenceError(row, where, "must be a non-empty string", value)
    return value


def _interval(
    onset: Any, offset: Any, row: int, where: str, duration: Callable[[], float]
) -> tuple[float, float]:
    """`(onset, offset)` checked against the rules, the offset clipped to the clip's end."""
    onset, offset = _seconds(onset, row, f"{where}.onset"), _seconds(offset, row, f"{where}.offset")
    if onset < 0:
        raise InvalidReferenceError(row, f"{where}.onset", "must be >= 0", onset)
    if offset <= onset:
        raise InvalidReferenceError(row, f"{where}.offset", f"must be greater than the onset {onset}", offset)
    end = duration()
    if onset >= end:
        raise InvalidReferenceError(
            row, f"{where}.onset", f"must be before the end of the clip ({end:.3f} s)", onset
        )
    return onset, min(offset, end)


def _sed_row(events: Any, row: int, column: str, duration: Callable[[], float]) -> tuple[list[dict], int]:
    """A row's events, offsets clipped, and how many were clipped; labels as given."""
    if not isinstance(events, (list, tuple)):
        raise InvalidReferenceError(row, column, "must be a list of events", events)
    checked, clipped = [], 0
    for index, event in enumerate(events):
        where = f"{column}[{index}]"
        if not isinstance(event, Mapping):
            raise InvalidReferenceError(
                row, where, "must be a mapping with event_label, onset and offset", event
            )
        label = _text(event.get("event_label"), row, f"{where}.event_label")
        onset, offset = _interval(event.get("onset"), event.get("offset"), row, where, duration)
        clipped += offset != event["offset"]
        checked.append({"event_label": label, "onset": onset, "offset": offset})
    _check_separated_per_class(checked, row, column)
    return checked, clipped


def _check_separated_per_class(events: list[dict], row: int, column: str) -> None:
    order = sorted(
        range(len(events)), key=lambda i: (label_key(events[i]["event_label"]), events[i]["onset"])
    )
    for before, after in zip(order, order[1:], strict=False):
        first, second = events[before], events[after]
        same_class = label_key(first["event_label"]) == label_key(second["event_label"])
        if same_class and second["onset"] <= first["offset"]:
            rule = (
                f"must come after the end ({first['offset']}) of {column}[{before}] of the same class: "
                "sed_scores_eval refuses overlapping or touching events of one class"
            )
            raise InvalidReferenceError(row, f"{column}[{after}].onset", rule, second["onset"])


def _grounding_row(
    phrase: Any, segments: Any, row: int, columns: tuple[str, str], duration: Callable[[], float]
) -> tuple[list[list[float]], int]:
    """A row's segments, offsets clipped, and how many were clipped."""
    phrase_column, column = columns
    _text(phrase, row, phrase_column)
    if not isinstance(segments, (list, tuple)):
        raise InvalidReferenceError(row, column, "must be a list of [onset, offset] pairs", segments)
    checked, clipped = [], 0
    for index, segment in enumerate(segments):
        where = f"{column}[{index}]"
        if not isinstance(segment, (list, tuple)) or len(segment) != 2:
            raise InvalidReferenceError(row, where, "must be an [onset, offset] pair", segment)
        if list(segment) == [0, 0]:
            checked.append([0.0, 0.0])
            continue
        onset, offset = _interval(segment[0], segment[1], row, where, duration)
        clipped += offset != segment[1]
        checked.append([onset, offset])
    _check_disjoint(checked, row, column)
    return checked, clipped


def _check_disjoint(segments: list[list[float]], row: int, column: str) -> None:
    real = sorted((s[0], s[1], i) for i, s in enumerate(segments) if s != [0.0, 0.0])
    for (onset, offset, before), (next_onset, _, after) in zip(real, real[1:], strict=False):
        if next_onset < offset:
            rule = (
                f"must not fall inside {column}[{before}] [{onset}, {offset}]: psds_eval refuses intersecting "
                "segments"
            )
            raise InvalidReferenceError(row, f"{column}[{after}].onset", rule, next_onset)


def _rows(dataset, columns: list[str], audio_column: str) -> Iterator[tuple[int, dict, Callable[[], float]]]:
    """`(row, {column: value}, duration)` per row, reading only `columns` and the undecoded audio cells;
    `duration()` opens the cell's header when first called. Values are Python objects whatever the dataset's format
    (a numpy format would give float32 0-d arrays)."""
    import datasets

    table = dataset.select_columns([*columns, audio_column]).with_format(None)
    table = table.cast_column(audio_column, datasets.Audio(decode=False))
    for start in range(0, len(table), _HEADER_BATCH):
        batch = table[start : start + _HEADER_BATCH]
        for offset, cell in enumerate(batch[audio_column]):
            row = start + offset
            yield row, {name: batch[name][offset] for name in columns}, _header_duration(cell, row)


def _header_duration(cell: Any, row: int) -> Callable[[], float]:
    cache = []

    def duration() -> float:
        if not cache:
            path = cell.get("path") if isinstance(cell, Mapping) else None
            name = f"The audio of example {row}" + (f" ({path})" if path else "")
            with open_audio(cell, name=name) as source:
                cache.append(source.duration)
        return cache[0]

    return duration


def _validate(
    dataset, columns: list[str], audio_column: str, check_row, skip_invalid: bool
) -> ValidatedReferences:
    """Run `check_row(row, values, duration) -> (reference, clipped)` over every row; raise or skip."""
    result = ValidatedReferences()
    for row, values, duration in _rows(dataset, columns, audio_column):
        try:
            reference, clipped = check_row(row, values, duration)
        except InvalidReferenceError as error:
            if not skip_invalid:
                raise
            result.skipped.append(error.problem)
            continue
        result.rows.append(row)
        result.references.append(reference)
        result.clipped_offsets += clipped
    _log(result, len(dataset))
    return result


def _log(result: ValidatedReferences, num_rows: int) -> None:
    if result.skipped:
        logger.warning(
            "%d of %d rows skipped for an invalid reference (--skip_invalid_events); the first: %s",
            len(result.skipped),
            num_rows,
            result.skipped[0],
        )
    if result.clipped_offsets:
        logger.warning("%d offset(s) past the end of their clip clipped to it.", result.clipped_offsets)


def validate_sed_events(
    dataset, events_column: str = "events", audio_column: str = "audio", skip_invalid: bool = False
) -> ValidatedReferences:
    """Check the SED reference events of every row (module docstring) and give them canonical class names.

    Raises:
        [`InvalidReferenceError`]: the first invalid value, unless `skip_invalid`.
        [`~audio_input.AudioInputError`]: a clip whose header cannot be read.
    """

    def check_row(row, values, duration):
        return _sed_row(values[events_column], row, events_column, duration)

    result = _validate(dataset, [events_column], audio_column, check_row, skip_invalid)
    _canonical_labels(result)
    return result


def _canonical_labels(result: ValidatedReferences) -> None:
    """Name each class by its first spelling (whitespace normalised) and record the classes spelled several ways."""
    canonical, spellings = {}, {}
    for event in (event for events in result.references for event in events):
        key = label_key(event["event_label"])
        canonical.setdefault(key, " ".join(event["event_label"].split()))
        spellings.setdefault(key, set()).add(event["event_label"])
        event["event_label"] = canonical[key]
    result.classes = sorted(canonical.values())
    result.merged_labels = {canonical[k]: sorted(v) for k, v in spellings.items() if len(v) > 1}
    for name, variants in result.merged_labels.items():
        logger.warning(
            "Labels %s give the same prompt up to case and whitespace: one class, %r.", variants, name
        )


def validate_grounding_segments(
    dataset,
    phrase_column: str = "phrase",
    segments_column: str = "segments",
    audio_column: str = "audio",
    skip_invalid: bool = False,
) -> ValidatedReferences:
    """Check the grounding phrase and reference segments of every row (module docstring).

    Raises:
        [`InvalidReferenceError`]: the first invalid value, unless `skip_invalid`.
        [`~audio_input.AudioInputError`]: a clip whose header cannot be read.
    """

    def check_row(row, values, duration):
        columns = (phrase_column, segments_column)
        return _grounding_row(values[phrase_column], values[segments_column], row, columns, duration)

    return _validate(dataset, [phrase_column, segments_column], audio_column, check_row, skip_invalid)


__all__ = [
    "InvalidReferenceError",
    "ValidatedReferences",
    "label_key",
    "validate_grounding_segments",
    "validate_sed_events",
]
