"""MGA-CLAP zero-shot sound event detection demo (a Gradio app, ready to run as a Hugging Face Space).

Upload or record audio, type class names or a free-text phrase, and see

- the clip-level zero-shot scores (softmax over the queries of the audio-text similarities);
- the frame-level similarity curve of every query over time (10/32 s frames, recordings of any length are cut into
  overlapping 10 s windows), with the detected events shaded;
- the detected events as a table (label, onset, offset, score);
- in the "Search" tab: a text search over the bundled example clips (every WAV beside this file), answered with a
  table of moments (recording, onset, offset, score) and the frame curve of the best recording
  (`transformers_mgaclap.search`; this tab needs `transformers-mgaclap[search]` installed).

The model comes from `--model`, else the `MGACLAP_MODEL` environment variable, else `DEFAULT_MODEL`: a Hub repository
id or a local folder written by `transformers_mgaclap.hub.save_for_hub` / `push_model_to_hub` (those carry the remote
code and the `zero-shot-audio-event-detection` pipeline, so `transformers_mgaclap` need not be installed). A local
folder is loaded without any network access.

```bash
MGACLAP_MODEL=path/or/hub-id python examples/space/app.py  # then open http://127.0.0.1:7860
```
"""

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Pipeline, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

try:
    import gradio as gr
    from matplotlib.figure import Figure
except (
    ModuleNotFoundError
) as error:  # the Space installs these from requirements.txt; a local run may lack them
    raise SystemExit(
        f"error: the demo needs {error.name}: pip install -r {Path(__file__).with_name('requirements.txt')} "
        '(or, in a checkout, pip install -e ".[demo]")'
    ) from None

# The folder `python -m transformers_mgaclap.convert_original_checkpoint --output_dir mgaclap-htsat` writes (see the
# official model card). Point MGACLAP_MODEL at your Hub copy (`<you>/mgaclap-htsat`, pushed with
# `transformers_mgaclap.hub.push_model_to_hub`) on a Space: no official Hub repository exists yet.
DEFAULT_MODEL = "mgaclap-htsat"
MODEL_ENV_VAR = "MGACLAP_MODEL"
TASK = "zero-shot-audio-event-detection"
# The endpoint handler's (and CLAP's) prompt for clip-level classification; frame-level detection uses the bare label,
# as the official SED evaluation does.
CLASSIFICATION_TEMPLATE = "This is a sound of {}."
DETECTION_TEMPLATE = "{}"
# A shared CPU Space embeds about one 10 s window per second: longer uploads would time out the request.
MAX_SECONDS = 120.0
DEFAULT_THRESHOLD = 0.5

HERE = Path(__file__).resolve().parent
EXAMPLE_AUDIO = HERE / "example_soundscape.wav"
# `transformers_mgaclap.soundscapes` settings of the committed example (see `write_example_audio`): a 16 kHz clip, so
# the example also exercises resampling to the model's 32 kHz. Clip 0 of seed 1: a rumble, then a beep over wind.
EXAMPLE_SEED = 1
EXAMPLE_SETTINGS = dict(sampling_rate=16000, duration=8.0, min_events_per_clip=2, max_events_per_clip=3)
EXAMPLE_LABELS = "rumble, beep, wind, dog barking"
EXAMPLE_CAPTION = "first a low rumble swells, and then an electronic beep sounds while the wind whooshes"
SEARCH_EXAMPLE = "an electronic beep"
SEARCH_TOP_K = 5


def write_example_audio(path: str | Path = EXAMPLE_AUDIO) -> dict[str, Any]:
    """Regenerate the example clip with `transformers_mgaclap.soundscapes` and write it as 16-bit WAV.

    Needs `transformers_mgaclap` and `soundfile`; the Space itself only reads the committed file.

    Returns:
        `dict`: the generated clip (`audio`, `caption`, `events`, `labels`), as `generate_soundscape` returns it.
    """
    import soundfile

    from transformers_mgaclap.data.soundscapes import SoundscapeConfig, clip_rng, generate_soundscape

    clip = generate_soundscape(clip_rng(EXAMPLE_SEED, 0), SoundscapeConfig(**EXAMPLE_SETTINGS))
    audio = clip["audio"]
    soundfile.write(str(path), audio["array"], audio["sampling_rate"], subtype="PCM_16")
    return clip


def resolve_model_name(cli_value: str | None = None) -> str:
    """`--model`, else `$MGACLAP_MODEL`, else `DEFAULT_MODEL`."""
    return cli_value or os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def parse_queries(text: str | None) -> list[str]:
    """Comma-separated class names or phrases, stripped, empty items and repeats dropped (first one kept).

    Raises:
        `gr.Error`: nothing left to score.
    """
    queries = list(dict.fromkeys(item.strip() for item in (text or "").split(",") if item.strip()))
    if not queries:
        raise gr.Error("Type at least one label or phrase (separate several with commas).")
    return queries


def gradio_audio(audio: tuple[int, np.ndarray] | None) -> tuple[np.ndarray, int]:
    """Gradio's `(sampling_rate, samples)` (integer PCM or float, `(n,)` or `(n, channels)`) as mono float audio
    `(samples,)`: channels are mixed down by their mean, as the audio input layer does for files (the detection
    pipeline takes one mono array per recording).

    Raises:
        `gr.Error`: no audio, no valid sampling rate, or too long a clip.
    """
    if audio is None:
        raise gr.Error("Upload or record some audio first.")
    rate, samples = audio
    samples = np.asarray(samples)
    if not rate or int(rate) <= 0:
        raise gr.Error(f"The audio has no valid sampling rate ({rate!r}).")
    if np.issubdtype(samples.dtype, np.integer):
        # Integer PCM from the browser / pydub: scale full scale to [-1, 1], as soundfile does.
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)  # Gradio gives (samples, channels)
    duration = samples.shape[-1] / int(rate)
    if duration > MAX_SECONDS:
        raise gr.Error(f"The audio is {duration:.0f} s long; this demo takes at most {MAX_SECONDS:.0f} s.")
    return samples, int(rate)


def remote_function(model_name_or_path: str, name: str):
    """A function of the model repository's own code (e.g. `"embedding.embed_audio"`), loaded as remote code.

    The package's API travels with every published repository: the demo uses it without installing the package.
    """
    return get_class_from_dynamic_module(name, model_name_or_path)


def load_detector(model_name_or_path: str) -> Pipeline:
    """The `zero-shot-audio-event-detection` pipeline of a repository or folder.

    With `transformers_mgaclap` installed its registration is used, so folders saved without the `custom_pipelines`
    entry load too; otherwise the repository's own code is run (`trust_remote_code=True`).
    """
    try:
        import transformers_mgaclap  # noqa: F401  (registers the task and the Auto classes)
    except ImportError:
        pass
    detector = pipeline(TASK, model=model_name_or_path, trust_remote_code=True)
    detector.model.eval()
    return detector


def similarity_figure(
    frame_similarity: np.ndarray,
    frame_boundaries: np.ndarray,
    frame_mask: np.ndarray,
    queries: list[str],
    events: list[dict],
    threshold: float,
) -> Figure:
    """One similarity curve per query over time, the threshold, and the detected events as shaded spans.

    A `matplotlib.figure.Figure` made without pyplot: no global figure registry, so nothing leaks between requests.
    """
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    axes = figure.add_subplot()
    # Frames that only hold padding carry no score: NaN breaks the curve there instead of drawing zeros.
    scores = np.where(frame_mask[:, None] > 0, frame_similarity, np.nan)
    edges = frame_boundaries
    colors = {}
    for index, query in enumerate(queries):
        # A step curve: each score holds over its frame's span [edge k, edge k + 1) (the last value is repeated
        # so that the last frame is drawn to the end).
        curve = np.append(scores[:, index], scores[-1, index])
        (line,) = axes.plot(edges, curve, drawstyle="steps-post", label=query, linewidth=1.8)
        colors[query] = line.get_color()
    for event in events:
        axes.axvspan(event["onset"], event["offset"], color=colors[event["label"]], alpha=0.18, linewidth=0)
    axes.axhline(threshold, color="0.3", linestyle="--", linewidth=1, label="_threshold")
    axes.set_xlim(float(edges[0]), float(edges[-1]))
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frame-text cosine")
    axes.set_title(f"Frame-level similarity (dashed: threshold {threshold:.2f}; shaded: detected events)")
    axes.legend(loc="upper right", fontsize="small")
    axes.grid(alpha=0.3)
    return figure


class MGAClapDemo:
    """The demo's model and its inference function, separate from the UI so that it can be tested directly.

    Args:
        model_name_or_path (`str`): a Hub repository id or a local folder (see the module docstring).
    """

    def __init__(self, model_name_or_path: str):
        self.model_name_or_path = model_name_or_path
        self.detector = load_detector(model_name_or_path)
        self.embed_audio = remote_function(model_name_or_path, "embedding.embed_audio")
        self.embed_text = remote_function(model_name_or_path, "embedding.embed_text")
        self.logit_scale = remote_function(model_name_or_path, "embedding.logit_scale")
        self.format_queries = remote_function(model_name_or_path, "processing_mgaclap.format_queries")
        self.search_index = None  # built on the first search

    def collection_index(self):
        """The search index of the bundled clips (every WAV beside app.py), built once into a temporary folder."""
        if self.search_index is None:
            try:
                import datasets

                from transformers_mgaclap.search import build_index
            except ImportError:
                raise gr.Error(
                    'The Search tab needs transformers-mgaclap: pip install "transformers-mgaclap[search]"'
                ) from None
            clips = datasets.Dataset.from_dict({"audio": sorted(str(path) for path in HERE.glob("*.wav"))})
            folder = tempfile.mkdtemp(prefix="mgaclap-search-")
            self.search_index = build_index(self.detector.model, self.detector, clips, folder)
        return self.search_index

    def search(self, text: str | None, top_k: float = SEARCH_TOP_K) -> tuple[list[list[Any]], Figure | None]:
        """The best moments of the bundled clips for a text, and the frame curve of the best recording.

        Returns:
            `(rows, figure)`: one row `[recording, onset_s, offset_s, score, clip_score]` per moment, best first;
            the curve of the best moment's recording with its moments shaded (`None` when nothing is found).

        Raises:
            `gr.Error`: an empty query, or the search module missing.
        """
        from transformers_mgaclap.search import embed_query, recording_curve, search_by_embedding

        query = (text or "").strip()
        if not query:
            raise gr.Error("Type what to search for, e.g. 'a beep'.")
        index = self.collection_index()
        vector = embed_query(index, query)
        moments = search_by_embedding(index, vector, k=int(top_k))
        rows = [
            [
                m["recording"],
                round(m["onset"], 3),
                round(m["offset"], 3),
                round(m["score"], 4),
                round(m["clip_score"], 4),
            ]
            for m in moments
        ]
        if not moments:
            return rows, None
        best = moments[0]["index_row"]
        boundaries, curve = recording_curve(index, best, vector)
        shaded = [{**m, "label": query} for m in moments if m["index_row"] == best]
        figure = similarity_figure(
            curve[:, None], boundaries, np.ones(len(curve)), [query], shaded, moments[0]["threshold"]
        )
        figure.axes[0].set_title(f"{moments[0]['recording']}: frame-text cosine (shaded: the moments found)")
        return rows, figure

    @torch.no_grad()
    def clip_scores(self, waveform: np.ndarray, rate: int, queries: list[str]) -> dict[str, float]:
        """Softmax over the queries of the clip-level audio-text logits (the model's 10 s view: the first 10 s)."""
        model = self.detector.model
        audio = self.embed_audio(model, self.detector, [waveform], sampling_rate=rate).clip_embeds
        texts = self.format_queries(queries, CLASSIFICATION_TEMPLATE)
        text = self.embed_text(model, self.detector, texts).text_embeds
        probabilities = (self.logit_scale(model) * audio @ text.t())[0].float().softmax(-1).tolist()
        return dict(zip(queries, probabilities, strict=True))

    def analyze(
        self, audio: tuple[int, np.ndarray] | None, text: str | None, threshold: float = DEFAULT_THRESHOLD
    ) -> tuple[dict[str, float], Figure, list[list[Any]]]:
        """Score and localise the queries in the audio.

        Args:
            audio (`tuple[int, np.ndarray]`): Gradio's numpy audio, `(sampling_rate, samples)`; any rate (resampled
                to 32 kHz), any number of channels (mixed down).
            text (`str`): class names or phrases, separated by commas.
            threshold (`float`): activity threshold on the (median-filtered) frame-text cosine.

        Returns:
            `(scores, figure, events)`: `{query: probability}` summing to 1; the similarity plot; one row
            `[label, onset_s, offset_s, score]` per detected event, sorted by onset.

        Raises:
            `gr.Error`: on missing or malformed audio or labels, shown to the user by Gradio.
        """
        waveform, rate = gradio_audio(audio)
        queries = parse_queries(text)
        threshold = float(threshold)
        try:
            scores = self.clip_scores(waveform, rate, queries)
            # The pipeline's own steps, so that the curves it thresholds are available for the plot too.
            detector = self.detector
            model_inputs = detector.preprocess(
                {"array": waveform, "sampling_rate": rate},
                candidate_labels=queries,
                hypothesis_template=DETECTION_TEMPLATE,
            )
            outputs = detector.forward(model_inputs, progress=False)
        except ValueError as error:  # the audio input layer's and the processor's refusals
            raise gr.Error(str(error)) from None
        events = detector.postprocess(outputs, threshold=threshold)
        figure = similarity_figure(
            outputs["frame_similarity"].float().numpy(),
            outputs["frame_boundaries"].double().numpy(),
            outputs["frame_mask"].numpy(),
            queries,
            events,
            threshold,
        )
        rows = [
            [event["label"], round(event["onset"], 3), round(event["offset"], 3), round(event["score"], 4)]
            for event in events
        ]
        return scores, figure, rows


def build_demo(model: str | MGAClapDemo) -> gr.Blocks:
    """The Gradio UI around [`MGAClapDemo.analyze`].

    Args:
        model (`str` or `MGAClapDemo`): a Hub id / local folder, or an already loaded demo.

    Returns:
        `gr.Blocks`: call `.launch()` on it.
    """
    demo_model = model if isinstance(model, MGAClapDemo) else MGAClapDemo(model)
    with gr.Blocks(title="MGA-CLAP zero-shot sound event detection") as demo:
        gr.Markdown(
            "# MGA-CLAP: zero-shot sound event detection\n"
            "Upload or record audio, type class names or a phrase (several separated by commas), and see how well "
            "each matches the whole clip and every 10/32 s frame. Scores are zero-shot: no training on your "
            f"labels. Model: `{demo_model.model_name_or_path}`."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="numpy", label="Audio", elem_id="audio-input"
                )
                text = gr.Textbox(
                    label="Labels or a phrase",
                    placeholder="dog barking, rain, a car passes by",
                    info="Separate labels with commas; a phrase is one query.",
                    elem_id="labels-input",
                )
                threshold = gr.Slider(
                    minimum=-1.0,
                    maximum=1.0,
                    value=DEFAULT_THRESHOLD,
                    step=0.01,
                    label="Detection threshold (frame-text cosine)",
                    info="Raw cosines have no universal operating point: tune it for your model and labels.",
                    elem_id="threshold-input",
                )
                submit = gr.Button("Detect", variant="primary", elem_id="submit-button")
            with gr.Column():
                scores = gr.Label(
                    label="Clip-level zero-shot scores (first 10 s)",
                    num_top_classes=10,
                    elem_id="scores-output",
                )
        plot = gr.Plot(
            label="Frame-level similarity and detected events", format="png", elem_id="similarity-plot"
        )
        events = gr.Dataframe(
            headers=["label", "onset (s)", "offset (s)", "score"],
            datatype=["str", "number", "number", "number"],
            label="Detected events",
            interactive=False,
            elem_id="events-output",
        )
        if EXAMPLE_AUDIO.is_file():
            gr.Examples(
                examples=[
                    [str(EXAMPLE_AUDIO), EXAMPLE_LABELS, DEFAULT_THRESHOLD],
                    [str(EXAMPLE_AUDIO), EXAMPLE_CAPTION, DEFAULT_THRESHOLD],
                ],
                inputs=[audio, text, threshold],
                cache_examples=False,  # the model runs on click: nothing is computed at startup
                elem_id="examples",
            )
        submit.click(demo_model.analyze, inputs=[audio, text, threshold], outputs=[scores, plot, events])
        with gr.Tab("Search", elem_id="search-tab"):
            gr.Markdown(
                "Search the bundled example clips by text: the best moments (which recording, and when) and the "
                "frame curve of the best recording. The clips are indexed on the first search."
            )
            with gr.Row():
                search_text = gr.Textbox(
                    label="Search for", placeholder=SEARCH_EXAMPLE, elem_id="search-input"
                )
                top_k = gr.Number(
                    value=SEARCH_TOP_K, precision=0, minimum=1, label="Moments", elem_id="top-k"
                )
            search_button = gr.Button("Search", variant="primary", elem_id="search-button")
            moments = gr.Dataframe(
                headers=["recording", "onset (s)", "offset (s)", "score", "clip score"],
                datatype=["str", "number", "number", "number", "number"],
                label="Moments",
                interactive=False,
                elem_id="moments-output",
            )
            search_plot = gr.Plot(label="Best recording", format="png", elem_id="search-plot")
            search_button.click(
                demo_model.search, inputs=[search_text, top_k], outputs=[moments, search_plot]
            )
    return demo


def main(argv: list[str] | None = None) -> None:
    """`python app.py [--model ID_OR_FOLDER] [--host 127.0.0.1] [--port 7860]`; `--write_example` regenerates the
    example clip instead of serving."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help=f"Hub id or local folder (default: ${MODEL_ENV_VAR} or {DEFAULT_MODEL})"
    )
    parser.add_argument("--host", default=None, help="server name (default: Gradio's, 127.0.0.1 locally)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: Gradio's, 7860)")
    parser.add_argument(
        "--write_example",
        action="store_true",
        help=f"regenerate {EXAMPLE_AUDIO.name} and exit (default: serve the demo)",
    )
    args = parser.parse_args(argv)
    if args.write_example:
        print(write_example_audio()["caption"])
        return
    demo = build_demo(resolve_model_name(args.model))
    # System fonts only: the default theme fetches Google Fonts, which an offline browser would wait for.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.launch(server_name=args.host, server_port=args.port, theme=theme)


if __name__ == "__main__":
    main()
