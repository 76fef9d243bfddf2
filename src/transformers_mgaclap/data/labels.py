"""Class labels of labelled-clip datasets (ESC-50 style `audio` + `label`), as names, indices and prompt text."""

from collections.abc import Sequence
from typing import Any

import numpy as np


def class_names_of(dataset, column: str = "label") -> list[str] | None:
    """The class names of a `ClassLabel` column; `None` for a plain integer or string column."""
    feature = dataset.features[column]
    return list(feature.names) if hasattr(feature, "names") else None


def label_text(label: Any, names: Sequence[str] | None = None) -> str:
    """A label as caption text: an index is looked up in `names`; `_` becomes a space (ESC-50's `dog_bark`)."""
    if names is not None and not isinstance(label, str):
        label = names[int(label)]
    return str(label).replace("_", " ")


def class_indices(labels: Sequence[Any], names: Sequence[str] | None = None) -> tuple[list[int], list[str]]:
    """Integer class indices of a label column, and the class name of each index.

    `ClassLabel` integers index `names`; other integers are their own indices (classes `0 .. max`, named by their
    number); any other labels are numbered in sorted order of their text.
    """
    if names is not None:
        return [int(label) for label in labels], list(names)
    if all(isinstance(label, (int, np.integer)) and not isinstance(label, bool) for label in labels):
        indices = [int(label) for label in labels]
        return indices, [str(index) for index in range(max(indices) + 1)]
    vocabulary = sorted({str(label) for label in labels})
    position = {name: index for index, name in enumerate(vocabulary)}
    return [position[str(label)] for label in labels], vocabulary


__all__ = ["class_indices", "class_names_of", "label_text"]
