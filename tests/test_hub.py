"""Publishing to the Hub, tested offline, and the Inference Endpoints handler.

A fake Hub (stack notes §9.2) listens on 127.0.0.1 in a background thread. The pushes run in a subprocess, because
huggingface_hub reads `HF_ENDPOINT` at import; the stored repositories are then loaded in a fresh process where
`transformers_mgaclap` cannot be imported, with `HF_HUB_OFFLINE=1`, and must reproduce the in-process outputs
exactly. The `zero-shot-audio-event-detection` pipeline is loaded from a pushed repository by its id, through the fake
Hub. The handler is exercised in-process on every input form and task, and on malformed requests.
"""

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_model
from huggingface_hub import ModelCard
from transformers import AutoTokenizer, pipeline

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap import handler as handler_module
from transformers_mgaclap.handler import EndpointHandler, threshold_events
from transformers_mgaclap.pipeline_mgaclap import TASK
from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity, tokenize_queries

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "model_cards" / "pretrained_model_template.md"
OFFICIAL_CARD = REPO_ROOT / "model_cards" / "official_mgaclap" / "README.md"
RATE = 32000
CAPTIONS = ["a dog barks", "rain falls on a roof", "a car engine idles"]
LABELS = ["dog barking", "rain", "car engine"]
PUSHED_REPO = "tester/mgaclap-tiny"  # push_model_to_hub
PIPELINE_REPO = "tester/mgaclap-tiny-sed"  # push_model_to_hub, then pipeline(TASK, model=PIPELINE_REPO)
TRANSFORMERS_REPO = "tester/mgaclap-tiny-transformers"  # model.push_to_hub + processor.push_to_hub
MODULES = [
    "configuration_mgaclap.py",
    "modeling_mgaclap.py",
    "feature_extraction_mgaclap.py",
    "processing_mgaclap.py",
]
# What the custom pipeline adds to a repository pushed by push_model_to_hub.
PIPELINE_MODULES = ["pipeline_mgaclap.py", "sound_event_detection.py"]
PIPELINE_ENTRY = {
    "impl": "pipeline_mgaclap.MGAClapZeroShotAudioEventDetectionPipeline",
    "pt": ["AutoModel"],
    "type": "multimodal",
}


def waveform(seconds: float, rate: int = RATE, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.4 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def encode(audio: np.ndarray, rate: int, file_format: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


# -- fake Hub ------------------------------------------------------------------------------------------------------


class FakeHub:
    """The endpoints of stack notes §9.2 on 127.0.0.1. Files of a commit are stored under `store/<repo_id>/`.

    The serving loop handles one request at a time through `handle_request` and ends on `stop()`, after
    `max_requests` requests or after `lifetime_s` seconds, whichever comes first.
    """

    def __init__(self, store: Path, max_requests: int = 300, lifetime_s: float = 300.0):
        self.store = store
        self.requests: list[tuple[str, str]] = []
        self.commits = 0
        self.max_requests = max_requests
        self.deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                hub.answer(self, "GET")

            def do_HEAD(self):
                hub.answer(self, "HEAD")

            def do_POST(self):
                hub.answer(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while (
                not self._stop.is_set()
                and time.monotonic() < self.deadline
                and len(self.requests) < self.max_requests
            ):
                self.server.handle_request()
        finally:
            self.server.server_close()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)

    @property
    def commit_oid(self) -> str:
        return hashlib.sha1(str(self.commits).encode()).hexdigest()

    # -- protocol --------------------------------------------------------------------------------------------

    @staticmethod
    def _body(request: BaseHTTPRequestHandler) -> bytes:
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    request.rfile.readline()
                    return b"".join(chunks)
                chunks.append(request.rfile.read(size))
                request.rfile.readline()
        return request.rfile.read(int(request.headers.get("Content-Length") or 0))

    def _send(self, request, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if not head:
            request.wfile.write(body)

    def _json(self, request, payload, status: int = 200):
        self._send(request, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def answer(self, request: BaseHTTPRequestHandler, method: str):
        path = unquote(urlsplit(request.path).path)
        self.requests.append((method, path))
        body = self._body(request) if method == "POST" else b""
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = payload["name"]
            if payload.get("organization") and "/" not in repo_id:
                repo_id = f"{payload['organization']}/{repo_id}"
            (self.store / repo_id).mkdir(parents=True, exist_ok=True)
            return self._json(request, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(request, {"warnings": [], "errors": []})
        if method == "GET" and path.startswith("/api/whoami"):
            return self._json(
                request,
                {
                    "type": "user",
                    "name": "tester",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
                },
            )
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if method == "POST" and match:
            repo_id, action = match.group(1), match.group(2)
            if action == "preupload":
                files = json.loads(body).get("files", [])
                return self._json(
                    request,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files
                        ]
                    },
                )
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("key") == "file":
                    target = self.store / repo_id / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
            self.commits += 1
            return self._json(
                request,
                {
                    "success": True,
                    "commitOid": self.commit_oid,
                    "commitUrl": f"{self.url}/{repo_id}/commit/{self.commit_oid}",
                    "pullRequestUrl": None,
                },
            )
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if method == "GET" and match:
            # Listing a folder (tokenizers look for `additional_chat_templates/`): what the Hub answers, entries or
            # EntryNotFound for a missing folder.
            folder = self.store / match.group(1) / (match.group(3) or "")
            if not folder.is_dir():
                headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
                return self._send(request, 404, b"Entry not found", headers)
            entries = [
                {
                    "type": "directory" if entry.is_dir() else "file",
                    "path": str(entry.relative_to(self.store / match.group(1))),
                    "oid": hashlib.sha1(entry.name.encode()).hexdigest(),
                    "size": entry.stat().st_size if entry.is_file() else 0,
                }
                for entry in sorted(folder.iterdir())
            ]
            return self._json(request, entries)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if method in ("GET", "HEAD") and match:
            target = self.store / match.group(1) / match.group(3)
            if target.is_file():
                content = target.read_bytes()
                headers = {
                    "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                    "X-Repo-Commit": self.commit_oid,
                    "Content-Type": "application/octet-stream",
                }
                return self._send(request, 200, content, headers, head=method == "HEAD")
            headers = {
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
                "X-Repo-Commit": self.commit_oid,
            }
            return self._send(request, 404, b"Entry not found", headers, head=method == "HEAD")
        headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        return self._send(request, 404, b"Not found", headers, head=method == "HEAD")


@pytest.fixture
def fake_hub(tmp_path):
    hub = FakeHub(tmp_path / "store")
    yield hub
    hub.stop()


# -- the published model -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_text_model_dir):
    """A tiny model + processor saved to a folder, reloaded with the Auto classes by the endpoint handler."""
    folder = tmp_path_factory.mktemp("published") / "mgaclap_tiny"
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"folder": folder, "model": model, "processor": processor, "handler": EndpointHandler(str(folder))}


def clean_env(**overrides) -> dict:
    # Any offline flag (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) would stop the push before it reaches the fake Hub.
    dropped = (
        "PYTHONPATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_MODULES_CACHE",
    )
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(TOKENIZERS_PARALLELISM="false", **overrides)
    return env


def run_script(script: str, env: dict, cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


PUSH_SCRIPT = """
import json
import sys

import torch

from transformers_mgaclap import MGAClapModel, MGAClapProcessor
from transformers_mgaclap.hub import push_model_to_hub
from transformers_mgaclap.model_card import create_model_card

folder, template, repo_id, transformers_repo = sys.argv[1:5]
model = MGAClapModel.from_pretrained(folder).eval()
processor = MGAClapProcessor.from_pretrained(folder)
training = dict(
    text_model="tiny-bert", audio_model="tiny-htsat", learning_rate=5e-05, weight_decay=0.0,
    lr_scheduler_type="cosine", num_warmup_steps=0, batch_size=2, num_processes=1, gradient_accumulation_steps=1,
    global_step=1,
)
card = create_model_card(
    template, repo_id=repo_id, config=model.config, training=training, datasets=["cvssp/WavCaps"],
    base_models=["google-bert/bert-base-uncased"], metrics={"t2a_R@1": 0.25},
)
info = push_model_to_hub(model, processor, repo_id, card=card)
model.push_to_hub(transformers_repo, tags=["audio", "clap"])
processor.push_to_hub(transformers_repo)
print(json.dumps({"commit_url": str(info), "oid": info.oid}))
"""

# Runs where the package cannot be imported (sys.modules entry None), offline, on the stored repositories.
RELOAD_SCRIPT = """
import sys

sys.modules["transformers_mgaclap"] = None
import json
import os

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

out, threads = sys.argv[1], int(sys.argv[2])
folders, captions = json.loads(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(threads)
audio = np.load(os.path.join(out, "audio.npy"))
info = {}
for name, folder in folders.items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    info[name] = {"model": type(model).__module__, "processor": type(processor).__module__}
    inputs = processor(text=captions, audio=[audio], sampling_rate=32000, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        frames = model.get_frame_text_similarity(**inputs)
    for key, value in {
        "logits_per_audio": outputs.logits_per_audio,
        "audio_embeds": outputs.audio_embeds,
        "text_embeds": outputs.text_embeds,
        "frame_similarity": frames.frame_similarity,
    }.items():
        np.save(os.path.join(out, f"{name}_{key}.npy"), value.numpy())

# The copied endpoint handler, imported from the repository as the endpoint does.
sys.path.insert(0, folders["pushed"])
from handler import EndpointHandler

handler = EndpointHandler(folders["pushed"])
info["handler"] = handler({"inputs": audio.tolist(), "parameters": {"candidate_labels": captions}})
info["handler_module"] = type(handler.model).__module__
info["loaded"] = sorted(k for k, v in sys.modules.items() if k.startswith("transformers_mgaclap") and v is not None)
with open(os.path.join(out, "info.json"), "w") as handle:
    json.dump(info, handle)
"""


def test_push_to_fake_hub_and_reload_through_remote_code(published, fake_hub, tmp_path):
    home = tmp_path / "hf_home"
    env = clean_env(
        HF_ENDPOINT=fake_hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_fake_token", HF_HOME=str(home)
    )
    stdout = run_script(
        PUSH_SCRIPT, env, tmp_path, str(published["folder"]), str(TEMPLATE), PUSHED_REPO, TRANSFORMERS_REPO
    )
    assert json.loads(stdout.strip().splitlines()[-1])["oid"]
    assert fake_hub.commits == 3  # push_model_to_hub, model.push_to_hub, processor.push_to_hub

    pushed, pushed_tf = fake_hub.store / PUSHED_REPO, fake_hub.store / TRANSFORMERS_REPO
    files = {str(p.relative_to(pushed)) for p in pushed.rglob("*") if p.is_file()}
    expected = {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "README.md",
        "handler.py",
        *MODULES,
        *PIPELINE_MODULES,
    }
    assert expected <= files, sorted(files)
    assert {"tokenizer.json", "tokenizer_config.json"} <= files, sorted(files)
    config = json.loads((pushed / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mgaclap.MGAClapConfig",
        "AutoModel": "modeling_mgaclap.MGAClapModel",
    }
    assert config["custom_pipelines"] == {TASK: PIPELINE_ENTRY}
    processor_config = json.loads((pushed / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_mgaclap.MGAClapProcessor"
    assert (pushed / "handler.py").read_bytes() == Path(handler_module.__file__).read_bytes()

    card = ModelCard.load(pushed / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-audio-classification"
    assert "custom_code" in card.data.tags and card.data.datasets == ["cvssp/WavCaps"]
    assert card.data.base_model == ["google-bert/bert-base-uncased"]
    assert card.data.eval_results[0].metric_value == 0.25
    assert f'AutoModel.from_pretrained("{PUSHED_REPO}", trust_remote_code=True)' in card.text

    # transformers' own push_to_hub: model then processor into one repository, with its generated card.
    files_tf = {str(p.relative_to(pushed_tf)) for p in pushed_tf.rglob("*") if p.is_file()}
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "README.md",
        *MODULES,
    } <= files_tf
    card_tf = ModelCard.load(pushed_tf / "README.md")
    assert card_tf.data.library_name == "transformers" and {"audio", "clap"} <= set(card_tf.data.tags)
    assert ("POST", "/api/repos/create") in fake_hub.requests
    assert ("GET", f"/{PUSHED_REPO}/resolve/main/README.md") not in fake_hub.requests  # we bring our own card

    # Reload both stored repositories in a fresh process without the package.
    audio = waveform(3.0)
    np.save(tmp_path / "audio.npy", audio)
    folders = {"pushed": str(pushed), "transformers": str(pushed_tf)}
    reload_env = clean_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home))
    args = [str(tmp_path), str(torch.get_num_threads()), json.dumps(folders), json.dumps(CAPTIONS)]
    run_script(RELOAD_SCRIPT, reload_env, tmp_path, *args)
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["loaded"] == []
    for name in folders:
        assert info[name]["model"].startswith("transformers_modules.")
        assert info[name]["processor"].startswith("transformers_modules.")

    model, processor = published["model"], published["processor"]
    inputs = processor(text=CAPTIONS, audio=[audio], sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        frames = model.get_frame_text_similarity(**inputs)
    references = {
        "logits_per_audio": outputs.logits_per_audio,
        "audio_embeds": outputs.audio_embeds,
        "text_embeds": outputs.text_embeds,
        "frame_similarity": frames.frame_similarity,
    }
    for name in folders:
        for key, reference in references.items():
            np.testing.assert_array_equal(
                np.load(tmp_path / f"{name}_{key}.npy"), reference.numpy(), err_msg=key
            )

    assert info["handler_module"].startswith("transformers_modules.")
    expected_scores = published["handler"](
        {"inputs": audio.tolist(), "parameters": {"candidate_labels": CAPTIONS}}
    )
    assert [e["label"] for e in info["handler"]] == [e["label"] for e in expected_scores]
    np.testing.assert_allclose(
        [e["score"] for e in info["handler"]], [e["score"] for e in expected_scores], atol=1e-7
    )


PUSH_ONLY_SCRIPT = """
import sys

from transformers_mgaclap import MGAClapModel, MGAClapProcessor
from transformers_mgaclap.hub import push_model_to_hub

folder, repo_id = sys.argv[1:3]
model = MGAClapModel.from_pretrained(folder).eval()
processor = MGAClapProcessor.from_pretrained(folder)
print(push_model_to_hub(model, processor, repo_id).oid)
"""

# Loads the pipeline by repository id through the fake Hub (HF_ENDPOINT), where the package cannot be imported.
HUB_PIPELINE_SCRIPT = """
import sys

sys.modules["transformers_mgaclap"] = None
import json
import os

import numpy as np
import torch
from transformers import pipeline

out, threads, repo_id, kwargs = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(threads)
audio = np.load(os.path.join(out, "audio.npy"))
detector = pipeline("zero-shot-audio-event-detection", model=repo_id, trust_remote_code=True)
info = {
    "pipeline": type(detector).__module__,
    "model": type(detector.model).__module__,
    "events": detector(audio, **kwargs),
    "loaded": sorted(k for k, v in sys.modules.items() if k.startswith("transformers_mgaclap") and v is not None),
}
with open(os.path.join(out, "pipeline_info.json"), "w") as handle:
    json.dump(info, handle)
"""


def test_pushed_repo_serves_the_event_detection_pipeline(published, fake_hub, tmp_path):
    home = tmp_path / "hf_home"
    push_env = clean_env(
        HF_ENDPOINT=fake_hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_fake_token", HF_HOME=str(home)
    )
    assert run_script(PUSH_ONLY_SCRIPT, push_env, tmp_path, str(published["folder"]), PIPELINE_REPO).strip()
    pushed = fake_hub.store / PIPELINE_REPO
    config = json.loads((pushed / "config.json").read_text())
    assert config["custom_pipelines"] == {TASK: PIPELINE_ENTRY}
    for module in PIPELINE_MODULES:
        assert (pushed / module).is_file(), module

    # The in-process reference: the same weights through the installed package's pipeline.
    model, processor = published["model"], published["processor"]
    detector = pipeline(
        TASK, model=model, feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer
    )
    audio = waveform(12.5, frequency=700.0, seed=3)  # two windows: the long-audio stitching runs too
    np.save(tmp_path / "audio.npy", audio)
    stitched = compute_long_audio_frame_similarity(
        model,
        audio,
        tokenize_queries(processor.tokenizer, LABELS),
        processor.feature_extractor,
        progress=False,
    )
    # The median frame score: some frames are active and some are not, so events have real edges.
    kwargs = {"candidate_labels": LABELS, "threshold": float(stitched.frame_similarity.median())}
    expected = detector(audio, **kwargs)
    assert expected

    # No offline flag: the repository is fetched by id from the fake Hub, into an empty cache.
    load_env = clean_env(
        HF_ENDPOINT=fake_hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "fresh_home")
    )
    args = [str(tmp_path), str(torch.get_num_threads()), PIPELINE_REPO, json.dumps(kwargs)]
    run_script(HUB_PIPELINE_SCRIPT, load_env, tmp_path, *args)
    info = json.loads((tmp_path / "pipeline_info.json").read_text())
    assert info["loaded"] == []
    assert info["pipeline"].startswith("transformers_modules.") and info["pipeline"].endswith(
        ".pipeline_mgaclap"
    )
    assert info["model"].startswith("transformers_modules.")
    assert ("GET", f"/{PIPELINE_REPO}/resolve/main/pipeline_mgaclap.py") in fake_hub.requests
    assert [(e["label"], e["onset"], e["offset"]) for e in info["events"]] == [
        (e["label"], e["onset"], e["offset"]) for e in expected
    ]
    assert [e["score"] for e in info["events"]] == pytest.approx([e["score"] for e in expected], abs=1e-6)


def test_save_for_hub_pipeline_entry_is_optional_and_leaves_the_model_alone(published, tmp_path):
    from transformers_mgaclap.hub import custom_pipelines_entry, save_for_hub

    model, processor = published["model"], published["processor"]
    assert custom_pipelines_entry() == {TASK: PIPELINE_ENTRY}
    with_pipeline = save_for_hub(model, processor, tmp_path / "with", repo_id="me/x")
    assert set(PIPELINE_MODULES) <= set(with_pipeline)
    assert json.loads((tmp_path / "with" / "config.json").read_text())["custom_pipelines"] == {
        TASK: PIPELINE_ENTRY
    }
    # The entry is written for the save only: the caller's config is unchanged afterwards.
    assert getattr(model.config, "custom_pipelines", None) is None

    without = save_for_hub(model, processor, tmp_path / "without", repo_id="me/x", pipeline=False)
    assert not set(PIPELINE_MODULES) & set(without)
    assert "custom_pipelines" not in json.loads((tmp_path / "without" / "config.json").read_text())


def test_fake_hub_stops_by_itself(tmp_path):
    hub = FakeHub(tmp_path / "store", max_requests=1, lifetime_s=5.0)
    import urllib.request

    with urllib.request.urlopen(f"{hub.url}/api/validate-yaml", data=b"{}", timeout=5) as response:
        assert json.load(response) == {"warnings": [], "errors": []}
    hub.thread.join(timeout=5)
    assert not hub.thread.is_alive()  # the request budget is spent: the loop ended and closed the socket


# -- the official card ---------------------------------------------------------------------------------------------


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


# -- the endpoint handler ------------------------------------------------------------------------------------------

AUDIO = waveform(3.0)
AUDIO_16K = waveform(2.0, rate=16000, frequency=300.0, seed=1)
WAV = encode(AUDIO, RATE, "WAV", "FLOAT")
FLAC = encode(AUDIO, RATE, "FLAC", "PCM_16")
OGG = encode(AUDIO, RATE, "OGG", "VORBIS")
MP3 = encode(AUDIO, RATE, "MP3", "MPEG_LAYER_III")
INPUT_FORMS = {
    "wav_bytes": (WAV, {}, sf.read(io.BytesIO(WAV), dtype="float32")[0], RATE),
    "flac_bytes": (FLAC, {}, sf.read(io.BytesIO(FLAC), dtype="float32")[0], RATE),
    "ogg_bytes": (OGG, {}, sf.read(io.BytesIO(OGG), dtype="float32")[0], RATE),
    "mp3_bytes": (MP3, {}, sf.read(io.BytesIO(MP3), dtype="float32")[0], RATE),
    "base64_wav": (base64.b64encode(WAV).decode(), {}, AUDIO, RATE),
    "data_uri_flac": (
        "data:audio/flac;base64," + base64.b64encode(FLAC).decode(),
        {},
        sf.read(io.BytesIO(FLAC))[0],
        RATE,
    ),
    "float_list_16k": (AUDIO_16K.tolist(), {"sampling_rate": 16000}, AUDIO_16K, 16000),
    "float_list_default_rate": (AUDIO.tolist(), {}, AUDIO, RATE),
}


def reference_inputs(published, form: str, texts=None):
    _, _, audio, rate = INPUT_FORMS[form]
    return published["processor"](
        text=texts,
        audio=np.asarray(audio, dtype=np.float32),
        sampling_rate=rate,
        resample=True,
        return_tensors="pt",
    )


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_handler_zero_shot_classification(published, form):
    inputs, parameters, _, _ = INPUT_FORMS[form]
    result = published["handler"](
        {"inputs": inputs, "parameters": {**parameters, "candidate_labels": LABELS}}
    )
    json.dumps(result)
    assert sorted(entry["label"] for entry in result) == sorted(LABELS)
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    texts = [f"This is a sound of {label}." for label in LABELS]
    with torch.no_grad():
        probabilities = published["model"](
            **reference_inputs(published, form, texts)
        ).logits_per_audio.softmax(-1)[0]
    expected = dict(zip(LABELS, probabilities.tolist(), strict=True))
    assert max(abs(entry["score"] - expected[entry["label"]]) for entry in result) < 1e-6


def test_handler_hypothesis_template_and_comma_labels(published):
    template = "{} can be heard"
    result = published["handler"](
        {
            "inputs": WAV,
            "parameters": {"candidate_labels": ", ".join(LABELS), "hypothesis_template": template},
        }
    )
    inputs = reference_inputs(published, "wav_bytes", [template.format(label) for label in LABELS])
    with torch.no_grad():
        probabilities = published["model"](**inputs).logits_per_audio.softmax(-1)[0].tolist()
    assert {e["label"]: e["score"] for e in result} == pytest.approx(
        dict(zip(LABELS, probabilities, strict=True)), abs=1e-6
    )


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_handler_audio_embedding(published, form):
    inputs, parameters, _, _ = INPUT_FORMS[form]
    result = published["handler"]({"inputs": inputs, "parameters": {**parameters, "task": "audio-embedding"}})
    assert isinstance(result, list) and all(isinstance(value, float) for value in result)
    features = reference_inputs(published, form)
    with torch.no_grad():
        expected = published["model"].get_audio_features(**features).pooler_output[0]
    assert len(result) == expected.numel() == published["model"].config.projection_dim
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-6)
    assert abs(np.linalg.norm(result) - 1) < 1e-5


def test_handler_resamples_float_lists(published):
    handler = published["handler"]
    at_16k = handler(
        {"inputs": AUDIO_16K.tolist(), "parameters": {"task": "audio-embedding", "sampling_rate": 16000}}
    )
    as_32k = handler({"inputs": AUDIO_16K.tolist(), "parameters": {"task": "audio-embedding"}})
    assert np.abs(np.subtract(at_16k, as_32k)).max() > 1e-4  # the rate is honoured, not ignored


def test_handler_text_embedding(published):
    handler, model, processor = published["handler"], published["model"], published["processor"]
    single = handler({"inputs": CAPTIONS[0], "parameters": {"task": "text-embedding"}})
    batch = handler({"inputs": CAPTIONS, "parameters": {"task": "text-embedding"}})
    json.dumps(batch)
    with torch.no_grad():
        expected = model.get_text_features(**processor(text=CAPTIONS, return_tensors="pt")).pooler_output
    assert len(batch) == len(CAPTIONS) and len(single) == expected.shape[1]
    np.testing.assert_allclose(batch, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(single, expected[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_handler_event_detection(published, form):
    inputs, parameters, _, _ = INPUT_FORMS[form]
    features = reference_inputs(published, form, LABELS)
    frames = published["model"].get_frame_text_similarity(**features)
    threshold = float(frames.frame_similarity.median())  # some frames above, some below
    options = {
        "threshold": threshold,
        "median_filter_frames": 3,
        "min_gap_seconds": 0.5,
        "min_duration_seconds": 0.0,
    }
    request = {
        "inputs": inputs,
        "parameters": {**parameters, **options, "task": "event-detection", "candidate_labels": LABELS},
    }
    result = published["handler"](request)
    json.dumps(result)
    expected = published["processor"].post_process_sound_event_detection(
        frames.frame_similarity, frames.frame_boundaries, LABELS, frame_mask=frames.frame_mask, **options
    )[0]
    assert result and [(e["label"], e["onset"], e["offset"]) for e in result] == [
        (e["label"], e["onset"], e["offset"]) for e in expected
    ]
    assert [e["score"] for e in result] == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert [e["onset"] for e in result] == sorted(e["onset"] for e in result)
    duration = len(INPUT_FORMS[form][2]) / INPUT_FORMS[form][3]
    # Padded frames never fire: events end at most one frame after the real audio.
    assert all(0 <= e["onset"] < e["offset"] <= duration + 10 / 32 for e in result)


class ProcessorWithoutPostProcessing:
    """A processor of an older release: callable, but without `post_process_sound_event_detection`."""

    def __init__(self, processor):
        self._processor = processor
        self.feature_extractor = processor.feature_extractor

    def __call__(self, *args, **kwargs):
        return self._processor(*args, **kwargs)


def test_handler_event_detection_fallback(published, monkeypatch):
    handler = published["handler"]
    monkeypatch.setattr(handler, "processor", ProcessorWithoutPostProcessing(handler.processor))
    parameters = {
        "task": "event-detection",
        "candidate_labels": LABELS,
        "threshold": -1.0,
        "median_filter_frames": 1,
    }
    result = handler({"inputs": WAV, "parameters": parameters})
    # Every valid frame is above -1: one event per label covering the audio (3 s -> frames 0..9, 10 x 10/32 s).
    assert [e["label"] for e in result] == LABELS
    assert all(e["onset"] == 0.0 and e["offset"] == pytest.approx(10 * 10 / 32) for e in result)


def test_threshold_events_merges_gaps_and_drops_short_events():
    scores = torch.tensor(
        [[0.9, 0.1], [0.8, 0.1], [0.1, 0.1], [0.7, 0.9], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.6, 0.1]]
    )
    boundaries = torch.arange(9, dtype=torch.float32) * 0.5
    events = threshold_events(scores, boundaries, ["a", "b"], threshold=0.5, min_gap_seconds=0.5)
    assert events == [
        {"label": "a", "onset": 0.0, "offset": 2.0, "score": pytest.approx(0.9)},
        {"label": "b", "onset": 1.5, "offset": 2.0, "score": pytest.approx(0.9)},
        {"label": "a", "onset": 3.5, "offset": 4.0, "score": pytest.approx(0.6)},
    ]
    assert threshold_events(scores, boundaries, ["a", "b"], 0.5, 0.5, min_duration_seconds=1.0) == [events[0]]
    mask = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0])
    assert events[2] not in threshold_events(scores, boundaries, ["a", "b"], 0.5, 0.5, frame_mask=mask)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command-line tool is not installed")
def test_handler_falls_back_to_ffmpeg(published, monkeypatch):
    monkeypatch.setattr(handler_module, "soundfile", None)
    pcm = encode(AUDIO, RATE, "WAV", "PCM_16")
    result = published["handler"]({"inputs": pcm, "parameters": {"task": "audio-embedding"}})
    features = published["processor"](
        audio=sf.read(io.BytesIO(pcm), dtype="float32")[0], sampling_rate=RATE, return_tensors="pt"
    )
    with torch.no_grad():
        expected = published["model"].get_audio_features(**features).pooler_output[0]
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-5)


AUDIO_LIST = AUDIO[:3200].tolist()
CLASSIFY = {"candidate_labels": LABELS}
BAD_REQUESTS = {
    "body_not_a_dict": ["inputs"],
    "no_inputs": {"parameters": CLASSIFY},
    "inputs_none": {"inputs": None, "parameters": CLASSIFY},
    "parameters_not_a_dict": {"inputs": WAV, "parameters": ["task"]},
    "no_task_no_labels": {"inputs": WAV},
    "unknown_task": {"inputs": WAV, "parameters": {"task": "speech-recognition"}},
    "undecodable_bytes": {"inputs": b"definitely not an audio file" * 10, "parameters": CLASSIFY},
    "empty_bytes": {"inputs": b"", "parameters": CLASSIFY},
    "bad_base64": {"inputs": "this is not base64 !!!", "parameters": CLASSIFY},
    "base64_of_garbage": {"inputs": base64.b64encode(b"garbage bytes" * 20).decode(), "parameters": CLASSIFY},
    "empty_string": {"inputs": "", "parameters": CLASSIFY},
    "empty_audio_list": {"inputs": [], "parameters": CLASSIFY},
    "empty_wav": {"inputs": encode(np.zeros(0, np.float32), RATE, "WAV", "FLOAT"), "parameters": CLASSIFY},
    "nan_samples": {"inputs": [0.1, float("nan"), 0.2] * 100, "parameters": CLASSIFY},
    "inf_samples": {"inputs": [0.1, float("inf")] * 100, "parameters": CLASSIFY},
    "nested_list": {"inputs": [AUDIO_LIST, AUDIO_LIST], "parameters": CLASSIFY},
    "ragged_list": {"inputs": [[0.1, 0.2], [0.3]], "parameters": CLASSIFY},
    "strings_as_samples": {"inputs": ["a", "b"], "parameters": {"task": "audio-embedding"}},
    "booleans_as_samples": {"inputs": [True, False], "parameters": {"task": "audio-embedding"}},
    "inputs_wrong_type": {"inputs": 42, "parameters": CLASSIFY},
    "inputs_dict": {"inputs": {"array": AUDIO_LIST}, "parameters": CLASSIFY},
    "bad_sampling_rate": {"inputs": AUDIO_LIST, "parameters": {**CLASSIFY, "sampling_rate": "fast"}},
    "negative_sampling_rate": {"inputs": AUDIO_LIST, "parameters": {**CLASSIFY, "sampling_rate": -16000}},
    "empty_labels": {"inputs": WAV, "parameters": {"candidate_labels": []}},
    "empty_label_string": {"inputs": WAV, "parameters": {"candidate_labels": ["dog", " "]}},
    "labels_wrong_type": {"inputs": WAV, "parameters": {"candidate_labels": 3}},
    "duplicate_labels": {"inputs": WAV, "parameters": {"candidate_labels": ["dog", "dog"]}},
    "template_without_slot": {"inputs": WAV, "parameters": {**CLASSIFY, "hypothesis_template": "a sound"}},
    "detection_without_labels": {"inputs": WAV, "parameters": {"task": "event-detection"}},
    "threshold_not_a_number": {
        "inputs": WAV,
        "parameters": {**CLASSIFY, "task": "event-detection", "threshold": "high"},
    },
    "even_median_window": {
        "inputs": WAV,
        "parameters": {**CLASSIFY, "task": "event-detection", "median_filter_frames": 4},
    },
    "text_embedding_of_bytes": {"inputs": WAV, "parameters": {"task": "text-embedding"}},
    "text_embedding_empty_text": {"inputs": ["a dog", ""], "parameters": {"task": "text-embedding"}},
    "text_embedding_empty_list": {"inputs": [], "parameters": {"task": "text-embedding"}},
}


@pytest.mark.parametrize("kind", sorted(BAD_REQUESTS))
def test_handler_rejects_bad_requests(published, kind):
    result = published["handler"](BAD_REQUESTS[kind])
    assert isinstance(result, dict) and result["status_code"] == 400, result
    assert isinstance(result["error"], str) and result["error"]
    json.dumps(result)


def test_handler_refuses_overlong_audio(published):
    result = published["handler"](
        {
            "inputs": np.zeros(601 * 1000, np.float32),
            "parameters": {"task": "audio-embedding", "sampling_rate": 1000},
        }
    )
    assert result["status_code"] == 413 and "600 s" in result["error"]


def test_handler_answers_internal_failures_with_500(published, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(published["handler"].model, "get_audio_features", broken)
    result = published["handler"]({"inputs": WAV, "parameters": {"task": "audio-embedding"}})
    assert result == {"error": "Internal error: RuntimeError: out of memory", "status_code": 500}


def test_save_for_hub_default_card_and_no_handler(published, tmp_path):
    from transformers_mgaclap.hub import save_for_hub

    files = save_for_hub(
        published["model"], published["processor"], tmp_path / "repo", repo_id="me/x", handler=False
    )
    assert "handler.py" not in files and {"README.md", "config.json", "model.safetensors"} <= set(files)
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "zero-shot-audio-classification"
    assert "custom_code" in card.data.tags
    assert 'AutoModel.from_pretrained("me/x", trust_remote_code=True)' in card.text
