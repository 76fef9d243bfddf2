"""The one publish path (`transformers_mgaclap.hub`), through each of its three doors, tested offline.

A fake Hub (`fake_hub.py`) listens on 127.0.0.1. A model is published by the API (`push_model_to_hub`), by the
pre-training script (`--push_to_hub`) and by the checkpoint converter (`convert(..., push_to_hub=...)`), each in a
subprocess because huggingface_hub reads `HF_ENDPOINT` at import. A fresh process where `transformers_mgaclap` cannot
be imported then loads every repository by its id, through the fake Hub: `AutoModel`, `AutoProcessor`, the
`zero-shot-audio-classification` and `zero-shot-audio-event-detection` pipelines, and the Inference Endpoints handler
(imported from the repository's files, as an endpoint does). Every output must equal the package's in-process one.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, pipeline
from transformers.dynamic_module_utils import check_imports, get_imports

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor, detect_sound_events
from transformers_mgaclap.hub import custom_pipelines_entry, save_for_hub
from transformers_mgaclap.hub.model_card import create_model_card, eval_dataset
from transformers_mgaclap.pipeline_mgaclap import TASK

from conftest import TINY_AUDIO, tiny_model
from fake_hub import FakeHub
from test_convert_original_checkpoint import TINY_KWARGS, official_layout, random_state_dict, save_official
from test_convert_original_checkpoint import tiny_config as converter_config

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_CARD = REPO_ROOT / "model_cards" / "official_mgaclap" / "README.md"
RATE = 32000
CAPTIONS = ["a dog barks", "rain falls on a roof", "a car engine idles"]
LABELS = ["dog barking", "rain", "car engine"]
MODULES = [
    "configuration_mgaclap.py",
    "modeling_mgaclap.py",
    "feature_extraction_mgaclap.py",
    "processing_mgaclap.py",
]
# What a published folder holds on top of what `save_pretrained` writes.
PUBLISHED_FILES = [
    "pipeline_mgaclap.py",
    "sound_event_detection.py",
    "audio_input.py",
    "embedding.py",
    "endpoint_handler.py",
    "handler.py",
    "requirements.txt",
    "README.md",
]
PIPELINE_ENTRY = {
    "impl": "pipeline_mgaclap.MGAClapZeroShotAudioEventDetectionPipeline",
    "pt": ["AutoModel"],
    "type": "multimodal",
}
# What remote code may import: the standard library, and what transformers itself depends on.
ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {"torch", "numpy", "transformers", "huggingface_hub"}


def waveform(seconds: float, rate: int = RATE, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.4 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_text_model_dir):
    """A tiny model and processor, and a folder they are saved to for the subprocesses."""
    folder = tmp_path_factory.mktemp("published") / "mgaclap_tiny"
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"folder": folder, "model": model, "processor": processor}


# -- what a published folder holds ---------------------------------------------------------------------------------


def test_save_for_hub_writes_every_piece(published, tmp_path):
    model, processor = published["model"], published["processor"]
    written = save_for_hub(model, processor, tmp_path / "repo", repo_id="me/x")
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", *MODULES} <= set(
        written
    )
    assert set(PUBLISHED_FILES) <= set(written), sorted(written)
    repo = tmp_path / "repo"
    config = json.loads((repo / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mgaclap.MGAClapConfig",
        "AutoModel": "modeling_mgaclap.MGAClapModel",
    }
    assert config["custom_pipelines"] == custom_pipelines_entry() == {TASK: PIPELINE_ENTRY}
    assert getattr(model.config, "custom_pipelines", None) is None  # written for the save only
    entry = files("transformers_mgaclap.hub") / "endpoint_entry.py"
    assert (repo / "handler.py").read_text() == entry.read_text()
    assert "soundfile" in (repo / "requirements.txt").read_text()
    card = ModelCard.load(repo / "README.md")
    assert (
        card.data.library_name == "transformers"
        and card.data.pipeline_tag == "zero-shot-audio-classification"
    )
    assert "custom_code" in card.data.tags
    assert 'AutoModel.from_pretrained("me/x", trust_remote_code=True)' in card.text


def test_published_code_passes_transformers_import_check(published, tmp_path):
    """transformers' own `check_imports` (run when remote code loads) on every module a repository carries."""
    save_for_hub(published["model"], published["processor"], tmp_path / "repo", repo_id="me/x")
    modules = sorted(path for path in (tmp_path / "repo").glob("*.py") if path.name != "handler.py")
    assert {path.name for path in modules} >= set(MODULES) | {"pipeline_mgaclap.py", "endpoint_handler.py"}
    for module in modules:
        relative = check_imports(
            module
        )  # raises ImportError for a third-party import outside try / if-available
        assert all((module.parent / f"{name}.py").is_file() for name in relative), (module.name, relative)
        third_party = set(get_imports(module)) - ALLOWED_IMPORTS
        assert not third_party, (
            f"{module.name} imports {third_party} outside a try block or availability check"
        )
        tree = ast.parse(module.read_text())
        package_imports = [
            node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0
            and (node.module or "").startswith("transformers_mgaclap")
        ]  # fmt: skip
        assert not package_imports, module.name
    # The endpoint entry point (handler.py) imports only transformers and loads the rest from the repository.
    assert set(get_imports(tmp_path / "repo" / "handler.py")) <= {"os", "transformers"}


# What `examples/pretrain.py` tells the card about its run.
TRAINING = dict(
    text_model="t", audio_model="a", learning_rate=1e-4, weight_decay=0.0, lr_scheduler_type="cosine",
    num_warmup_steps=0, batch_size=2, num_processes=1, gradient_accumulation_steps=1, global_step=4,
)  # fmt: skip


@pytest.mark.parametrize(
    "sources, expected",
    [
        (None, ("transformers_mgaclap.data.soundscapes", "synthetic soundscapes")),
        (["user/clotho"], ("user/clotho", "user/clotho")),
        (["user/audiocaps", "user/clotho"], ("user/audiocaps + user/clotho", "user/audiocaps + user/clotho")),
    ],
)
def test_model_index_names_the_evaluation_data(sources, expected):
    config = tiny_model().config
    card = create_model_card(
        repo_id="me/model", config=config, training=TRAINING, datasets=sources or ["synthetic"], metrics={"t2a_R@1": 0.25},
        evaluated_on=eval_dataset(sources, "test"),
    )  # fmt: skip
    (result,) = card.data.eval_results
    assert result.dataset_type == expected[0] and result.dataset_name.startswith(expected[1])
    assert result.dataset_split == "test" and result.metric_value == 0.25
    with pytest.raises(ValueError, match="need `evaluated_on`"):
        create_model_card(
            repo_id="me/model", config=config, training=TRAINING, datasets=["x"], metrics={"t2a_R@1": 0.25}
        )


def test_a_local_dataset_folder_is_named_by_its_base_name(tmp_path):
    (tmp_path / "my_clotho").mkdir()
    assert eval_dataset([str(tmp_path / "my_clotho")]).type == "my_clotho"


def test_card_pictures_are_published_with_the_card(tmp_path, tiny_text_model_dir):
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    card = create_model_card(
        repo_id="me/model", config=model.config, training=TRAINING, datasets=["x"], figure="frames.png"
    )
    with pytest.raises(ValueError, match=r"shows \['frames.png'\]"):
        save_for_hub(model, processor, tmp_path / "missing", repo_id="me/model", card=card)
    assert not (tmp_path / "missing").exists()  # refused before anything was written
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG fake")
    written = save_for_hub(model, processor, tmp_path / "repo", repo_id="me/model", card=card,
                           files={"frames.png": picture})  # fmt: skip
    assert "frames.png" in written and (tmp_path / "repo" / "frames.png").read_bytes() == picture.read_bytes()
    assert "![" in (tmp_path / "repo" / "README.md").read_text()


def test_official_card_metadata():
    card = ModelCard.load(OFFICIAL_CARD)
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "zero-shot-audio-classification"
    assert {"clap", "audio", "custom_code"} <= set(data.tags)
    assert data.license == "other"
    assert data.datasets and all("/" in d for d in data.datasets)
    assert data.base_model is None
    assert data.model_name
    for result in data.eval_results:
        assert result.source_name and "paper" in result.source_name.lower()
        assert 0 < result.metric_value < 100
        assert result.task_type and result.dataset_type and result.metric_type
    assert {r.metric_value for r in data.eval_results} >= {41.8, 54.4, 94.9, 26.4, 48.7}
    assert "trust_remote_code=True" in card.text
    assert "license: other" in card.content and "licen" in card.text.lower()
    assert "@inproceedings" in card.text


# -- the three doors, and a fresh process without the package ------------------------------------------------------


def hub_env(hub: FakeHub, home: Path, **overrides) -> dict:
    """The environment of a process that talks to the fake Hub: no offline flag, a fake token, its own cache."""
    dropped = (
        "PYTHONPATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_MODULES_CACHE",
    )
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN="hf_fake_token",
        HF_HOME=str(home),
        TOKENIZERS_PARALLELISM="false",
        **overrides,
    )
    return env


def run(command: list[str], env: dict, cwd: Path) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


API_PUSH = """
import sys

from transformers_mgaclap import MGAClapModel, MGAClapProcessor
from transformers_mgaclap.hub import push_model_to_hub

folder, repo_id = sys.argv[1:3]
print(push_model_to_hub(MGAClapModel.from_pretrained(folder), MGAClapProcessor.from_pretrained(folder), repo_id).oid)
"""

CONVERTER_PUSH = """
import json
import sys

from transformers_mgaclap import MGAClapConfig
from transformers_mgaclap.hub.convert_original_checkpoint import convert

checkpoint, output, tokenizer, repo_id, config = sys.argv[1:6]
convert(checkpoint, output, tokenizer_name_or_path=tokenizer, push_to_hub=repo_id, config=MGAClapConfig(**json.loads(config)))
"""

# Runs where the package cannot be imported, on repositories fetched by id from the fake Hub.
FRESH_LOAD = """
import importlib.util
import json
import os
import sys

sys.modules["transformers_mgaclap"] = None
import numpy as np
import torch
from transformers import AutoModel, AutoProcessor, pipeline

out, repos, captions, labels = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
clip, recording = np.load(os.path.join(out, "clip.npy")), np.load(os.path.join(out, "recording.npy"))
results = {}
for name, (repo_id, folder, threshold) in repos.items():
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    with torch.no_grad():
        logits = model(**processor(text=captions, audio=clip, sampling_rate=32000, return_tensors="pt")).logits_per_audio
    classifier = pipeline("zero-shot-audio-classification", model=repo_id, trust_remote_code=True)
    detector = pipeline("zero-shot-audio-event-detection", model=repo_id, trust_remote_code=True)
    # The endpoint imports handler.py from the repository's files and builds EndpointHandler(path).
    spec = importlib.util.spec_from_file_location(f"handler_{name}", os.path.join(folder, "handler.py"))
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    handler = handler_module.EndpointHandler(folder)
    detection = {"task": "event-detection", "candidate_labels": labels, "threshold": threshold}
    results[name] = {
        "modules": [type(model).__module__, type(processor).__module__, type(detector).__module__, type(handler.handler).__module__],
        "logits": logits.tolist(),
        "classifier": classifier(clip, candidate_labels=labels),
        "detector": detector(recording, candidate_labels=labels, threshold=threshold),
        "handler_scores": handler({"inputs": clip.tolist(), "parameters": {"candidate_labels": labels}}),
        "handler_events": handler({"inputs": recording.tolist(), "parameters": detection}),
    }
results["loaded"] = sorted(k for k, v in sys.modules.items() if k.startswith("transformers_mgaclap") and v is not None)
with open(os.path.join(out, "fresh.json"), "w") as handle:
    json.dump(results, handle)
"""


def reference(model, processor, clip: np.ndarray, recording: np.ndarray) -> dict:
    """The package's own answers, in this process, for a published model."""
    with torch.no_grad():
        inputs = processor(text=CAPTIONS, audio=clip, sampling_rate=RATE, return_tensors="pt")
        logits = model(**inputs).logits_per_audio
    stitched = detect_sound_events(
        model, recording, LABELS, processor=processor, threshold=-1.0, progress=False
    )
    # A threshold inside the score range: some frames are active and some are not, so events have real edges.
    threshold = float(np.median([event["score"] for event in stitched]))
    classifier = pipeline(
        "zero-shot-audio-classification",
        model=model,
        feature_extractor=processor.feature_extractor,
        tokenizer=processor.tokenizer,
    )
    return {
        "logits": logits.tolist(),
        "classifier": classifier(clip, candidate_labels=LABELS),
        "events": detect_sound_events(
            model, recording, LABELS, processor=processor, threshold=threshold, progress=False
        ),
        "threshold": threshold,
    }


def same_events(actual: list[dict], expected: list[dict]) -> None:
    assert [(e["label"], e["onset"], e["offset"]) for e in actual] == [
        (e["label"], e["onset"], e["offset"]) for e in expected
    ]
    assert [e["score"] for e in actual] == pytest.approx([e["score"] for e in expected], abs=1e-6)


def test_every_door_publishes_a_repository_that_works_without_the_package(
    published, tmp_path, tiny_text_model_dir
):
    hub = FakeHub(tmp_path / "store", max_requests=3000)
    try:
        env = hub_env(hub, tmp_path / "home")
        repos = {"api": "tester/api", "pretrain": "tester/pretrain", "converter": "tester/converter"}
        # 1. The API.
        run(
            [sys.executable, "-c", textwrap.dedent(API_PUSH), str(published["folder"]), repos["api"]],
            env,
            tmp_path,
        )
        # 2. The pre-training script's --push_to_hub, after one step on the embedded data.
        tiny = {
            "audio_config": TINY_AUDIO,
            "codebook_size": 24,
            "projection_dim": 16,
            "codebook_affinity_scale": 0.5,
        }
        run(
            [sys.executable, str(REPO_ROOT / "examples" / "pretrain.py"), "--output_dir", str(tmp_path / "run"),
             "--text_model_name_or_path", str(tiny_text_model_dir), "--model_config_overrides", json.dumps(tiny),
             "--synthetic_train_clips", "8", "--synthetic_validation_clips", "4", "--per_device_train_batch_size", "4",
             "--dataloader_num_workers", "0", "--max_train_steps", "1", "--push_to_hub",
             "--hub_model_id", repos["pretrain"]],
            env, tmp_path,
        )  # fmt: skip
        # 3. The converter of the official checkpoint.
        official = random_state_dict(official_layout(converter_config(), position_ids=True))
        checkpoint = save_official(tmp_path / "model.pt", official)
        run(
            [sys.executable, "-c", textwrap.dedent(CONVERTER_PUSH), str(checkpoint), str(tmp_path / "converted"),
             str(tiny_text_model_dir), repos["converter"], json.dumps(TINY_KWARGS)],
            env, tmp_path,
        )  # fmt: skip

        clip, recording = (
            waveform(3.0),
            waveform(12.5, frequency=700.0, seed=3),
        )  # two windows: stitching runs
        np.save(tmp_path / "clip.npy", clip)
        np.save(tmp_path / "recording.npy", recording)
        expected = {}
        for name, repo_id in repos.items():
            folder = hub.store / repo_id
            assert set(PUBLISHED_FILES) <= {path.name for path in folder.iterdir()}, (
                name,
                sorted(os.listdir(folder)),
            )
            model = MGAClapModel.from_pretrained(folder).eval()
            expected[name] = reference(model, MGAClapProcessor.from_pretrained(folder), clip, recording)
        assert (
            ModelCard.load(hub.store / repos["converter"] / "README.md").data.license == "other"
        )  # the official card
        assert (
            ModelCard.load(hub.store / repos["pretrain"] / "README.md").data.datasets is None
        )  # synthetic data

        arguments = {
            name: [repo_id, str(hub.store / repo_id), expected[name]["threshold"]]
            for name, repo_id in repos.items()
        }
        fresh_env = hub_env(hub, tmp_path / "fresh_home")
        run(
            [sys.executable, "-c", textwrap.dedent(FRESH_LOAD), str(tmp_path), json.dumps(arguments),
             json.dumps(CAPTIONS), json.dumps(LABELS), str(torch.get_num_threads())],
            fresh_env, tmp_path,
        )  # fmt: skip
    finally:
        hub.stop()
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    assert fresh.pop("loaded") == []
    for name, result in fresh.items():
        assert all(module.startswith("transformers_modules.") for module in result["modules"]), result[
            "modules"
        ]
        assert result["logits"] == expected[name]["logits"], name
        assert [e["label"] for e in result["classifier"]] == [
            e["label"] for e in expected[name]["classifier"]
        ]
        assert [e["score"] for e in result["classifier"]] == pytest.approx(
            [e["score"] for e in expected[name]["classifier"]], abs=1e-6
        )
        assert expected[name]["events"], name
        same_events(result["detector"], expected[name]["events"])
        same_events(result["handler_events"], expected[name]["events"])
        assert sorted(e["label"] for e in result["handler_scores"]) == sorted(LABELS)


def test_fake_hub_stops_by_itself(tmp_path):
    hub = FakeHub(tmp_path / "store", max_requests=1, lifetime_s=5.0)
    import urllib.request

    with urllib.request.urlopen(f"{hub.url}/api/validate-yaml", data=b"{}", timeout=5) as response:
        assert json.load(response) == {"warnings": [], "errors": []}
    hub.thread.join(timeout=5)
    assert not hub.thread.is_alive()  # the request budget is spent: the loop ended and closed the socket
