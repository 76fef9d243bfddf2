"""Procedurally generated sound-event soundscapes with exact strong labels and temporal captions.

This module is the built-in, offline data source of the package: it synthesises short clips in which a
handful of sound events (a siren, a bell, knocking, dripping water, ...) play at random times over a
faint background noise, and describes each clip three ways:

* ``events``: strong labels, ``{"event_label", "onset", "offset"}`` in seconds, exact to the sample (an
  event's onset is the first and its offset one past the last sample where its signal is non-zero);
* ``labels``: the sorted unique event labels (weak labels, for tagging);
* ``caption`` / ``captions``: natural-language descriptions built from the events in time order with
  temporal connectives ("a siren wails while a bell rings, then water drips").

Everything is synthesised with numpy from seeded random generators, so a data set is fully determined
by its seed: clip ``i`` depends only on ``(seed, i, split)`` (see :func:`clip_rng`), data sets of
different sizes share their first clips, and clips can be generated in any order or in parallel.

Typical use::

    from transformers_mgaclap.data.soundscapes import build_soundscape_dataset, build_soundscape_splits

    train = build_soundscape_dataset(num_clips=200, seed=0)      # datasets.Dataset
    splits = build_soundscape_splits(200, 20, 50, seed=0)        # DatasetDict(train, validation, test)
    example = train[0]
    waveform = example["audio"]["array"]                         # float32, 320 000 samples
    example["caption"], example["events"], example["labels"]

Only numpy is needed to import this module and to call :func:`generate_soundscapes`; building a
``datasets.Dataset`` needs the ``audio`` extra (``datasets``; decoding rows needs ``torchcodec``).
Audio is stored as 32-bit IEEE-float WAV by default (lossless: decoding gives back the generated
waveform exactly); ``wav_subtype="PCM_16"`` halves the size at 16-bit quantisation (error <= 2**-16).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets

__all__ = [
    "OVERLAP_CONNECTIVES",
    "SEQUENCE_CONNECTIVES",
    "SOUND_EVENT_CLASSES",
    "SoundEventClass",
    "SoundscapeConfig",
    "build_labelled_clip_dataset",
    "build_soundscape_dataset",
    "build_soundscape_splits",
    "caption_events",
    "class_labels",
    "class_names",
    "clip_rng",
    "encode_wav",
    "generate_soundscape",
    "generate_soundscapes",
    "get_sound_event_class",
]

_TWO_PI = 2.0 * np.pi
# An event's extent is where its signal exceeds this fraction of its peak (-60 dB); the signal is set to
# exactly zero outside that extent, so the strong labels match the non-zero samples exactly.
_SUPPORT_THRESHOLD = 1e-3
_FADE_SECONDS = 0.005
_MAX_CAPTION_WORDS = 25


# --------------------------------------------------------------------------------------------------
# Signal helpers (all vectorised; the only Python loops run over events, strikes or drops)
# --------------------------------------------------------------------------------------------------


def _time(num_samples: int, sampling_rate: int) -> np.ndarray:
    return np.arange(num_samples, dtype=np.float64) / sampling_rate


def _phase(frequency: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Running phase (radians) of an oscillator whose instantaneous frequency (Hz) is ``frequency``."""
    return np.cumsum(frequency) * (_TWO_PI / sampling_rate)


def _nyquist_safe(frequency: float | np.ndarray, sampling_rate: int) -> float | np.ndarray:
    return np.minimum(frequency, 0.45 * sampling_rate)


def _band_gain(freqs: np.ndarray, low: float | None, high: float | None, order: int = 2) -> np.ndarray:
    """Magnitude response of a Butterworth-like band-pass (``None`` leaves that side open)."""
    gain = np.ones_like(freqs)
    safe = np.maximum(freqs, 1e-6)
    if low is not None:
        gain /= np.sqrt(1.0 + (low / safe) ** (2 * order))
    if high is not None:
        gain /= np.sqrt(1.0 + (safe / high) ** (2 * order))
    return gain


@functools.lru_cache(maxsize=8)
def _noise_gain(
    num_samples: int, sampling_rate: int, low: float | None, high: float | None, order: int, slope: float
) -> np.ndarray:
    freqs = np.fft.rfftfreq(num_samples, 1.0 / sampling_rate)
    gain = _band_gain(freqs, low, high, order)
    if slope:
        gain *= np.maximum(freqs, 10.0) ** -slope
    gain[0] = 0.0
    gain = gain.astype(np.float32)
    gain.flags.writeable = False
    return gain


def _shaped_noise(
    rng: np.random.Generator,
    num_samples: int,
    sampling_rate: int,
    low: float | None = None,
    high: float | None = None,
    order: int = 2,
    slope: float = 0.0,
) -> np.ndarray:
    """Gaussian noise (float32) with a band-pass magnitude response and an ``f**-slope`` tilt, unit RMS.

    Drawn directly as a random spectrum and brought to the time domain by one single-precision FFT.
    """
    num_bins = num_samples // 2 + 1
    spectrum = rng.standard_normal((num_bins, 2), dtype=np.float32).view(np.complex64)[:, 0]
    noise = np.fft.irfft(
        spectrum * _noise_gain(num_samples, sampling_rate, low, high, order, slope), n=num_samples
    )
    rms = np.sqrt(np.mean(np.square(noise, dtype=np.float64)))
    return noise / np.float32(rms) if rms > 0 else noise


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred box filter of ``width`` samples (O(n) through a cumulative sum)."""
    if width <= 1 or x.size == 0:
        return x
    padded = np.concatenate(
        [np.zeros(1), np.cumsum(np.pad(x, (width // 2, width - 1 - width // 2), mode="edge"))]
    )
    return (padded[width:] - padded[:-width]) / width


def _smooth_gate(gate: np.ndarray, sampling_rate: int, seconds: float = 0.003) -> np.ndarray:
    width = max(1, round(seconds * sampling_rate))
    return _moving_average(_moving_average(gate, width), width)


def _place(
    out: np.ndarray, kernel: np.ndarray, positions: Sequence[int], amplitudes: Sequence[float]
) -> np.ndarray:
    """Add ``amplitude * kernel`` at every position (an impulse train convolved with a kernel)."""
    for position, amplitude in zip(positions, amplitudes, strict=True):
        if position >= out.size:
            continue
        length = min(kernel.size, out.size - position)
        out[position : position + length] += amplitude * kernel[:length]
    return out


def _apply_fades(x: np.ndarray, sampling_rate: int, seconds: float = _FADE_SECONDS) -> np.ndarray:
    """Raised-sine fade-in and fade-out (never exactly zero at the end points)."""
    length = min(round(seconds * sampling_rate), x.size // 2)
    if length < 1:
        return x
    ramp = np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2
    x[:length] *= ramp
    x[-length:] *= ramp[::-1]
    return x


def _active_rms(x: np.ndarray, sampling_rate: int) -> float:
    """RMS over the 20 ms frames within 20 dB of the loudest one (a level measure for sparse sounds)."""
    frame = max(1, round(0.02 * sampling_rate))
    num_frames = -(-x.size // frame)
    padded = np.zeros(num_frames * frame)
    padded[: x.size] = x
    energy = np.mean(padded.reshape(num_frames, frame) ** 2, axis=1)
    active = energy >= 0.01 * energy.max()
    return float(np.sqrt(np.mean(energy[active])))


# --------------------------------------------------------------------------------------------------
# The sound event classes
# --------------------------------------------------------------------------------------------------


def _synth_beep(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Gated pure tone near 1 kHz: beep-beep-beep."""
    t = _time(n, sr)
    frequency = rng.uniform(880.0, 1120.0)
    on = rng.uniform(0.10, 0.20)
    period = on + rng.uniform(0.08, 0.16)
    gate = _smooth_gate(((t % period) < on).astype(np.float64), sr)
    return np.sin(_TWO_PI * frequency * t + rng.uniform(0, _TWO_PI)) * gate


def _synth_whistle(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Steady high tone (1.9-2.4 kHz) with vibrato and a little breath noise."""
    t = _time(n, sr)
    f0 = rng.uniform(1900.0, 2400.0)
    vibrato = 1.0 + rng.uniform(0.01, 0.025) * np.sin(
        _TWO_PI * rng.uniform(4.5, 7.0) * t + rng.uniform(0, _TWO_PI)
    )
    tone = np.sin(_phase(f0 * vibrato, sr) + rng.uniform(0, _TWO_PI))
    breath = _shaped_noise(rng, n, sr, low=f0 - 400.0, high=f0 + 400.0, order=3)
    return tone * (1.0 + 0.1 * np.sin(_TWO_PI * rng.uniform(0.5, 1.0) * t)) + 0.05 * breath


def _sweep(rng: np.random.Generator, n: int, sr: int, start: float, stop: float) -> np.ndarray:
    t = _time(n, sr)
    period = min(rng.uniform(0.45, 0.9), n / sr)
    fraction = (t % period) / period
    frequency = _nyquist_safe(start * (stop / start) ** fraction, sr)
    phase = _phase(frequency, sr) + rng.uniform(0, _TWO_PI)
    envelope = np.sin(np.pi * np.clip(fraction, 0.02, 0.98)) ** 0.3
    return envelope * (np.sin(phase) + 0.25 * np.sin(2.0 * phase))


def _synth_rising_sweep(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Repeated upward exponential chirps, ~300 Hz to ~2.7 kHz."""
    return _sweep(rng, n, sr, rng.uniform(250.0, 400.0), rng.uniform(2200.0, 3200.0))


def _synth_falling_sweep(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Repeated downward exponential chirps, ~5.7 kHz to ~1.5 kHz."""
    return _sweep(rng, n, sr, rng.uniform(5000.0, 6500.0), rng.uniform(1200.0, 1800.0))


def _synth_siren(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Slow frequency-modulated wail around 800 Hz with harmonics."""
    t = _time(n, sr)
    centre = rng.uniform(650.0, 950.0)
    depth = rng.uniform(0.3, 0.4)
    frequency = centre * (
        1.0 + depth * np.sin(_TWO_PI * rng.uniform(0.35, 0.7) * t + rng.uniform(0, _TWO_PI))
    )
    phase = _phase(frequency, sr) + rng.uniform(0, _TWO_PI)
    return np.sin(phase) + 0.45 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase) + 0.1 * np.sin(4 * phase)


def _synth_white_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Broadband white noise with a steady envelope."""
    return rng.standard_normal(n) * (1.0 + 0.05 * np.sin(_TWO_PI * rng.uniform(0.5, 2.0) * _time(n, sr)))


def _synth_rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Brown noise below ~120 Hz with a slow swell."""
    noise = _shaped_noise(rng, n, sr, low=20.0, high=rng.uniform(100.0, 140.0), order=2, slope=1.0)
    swell = 1.0 + 0.4 * np.sin(_TWO_PI * rng.uniform(0.3, 1.0) * _time(n, sr) + rng.uniform(0, _TWO_PI))
    return noise * swell


def _impulse_times(rng: np.random.Generator, n: int, sr: int, period: float, jitter: float) -> np.ndarray:
    times = np.arange(0.0, n / sr, period)
    times[1:] += rng.uniform(-jitter, jitter, size=times.size - 1) * period
    return np.clip(np.round(times * sr).astype(np.int64), 0, n - 1)


def _synth_knock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Groups of two or three wooden knocks (decaying 200-280 Hz resonances)."""
    resonance = rng.uniform(200.0, 280.0)
    decay = rng.uniform(0.015, 0.03)
    tk = _time(round(6 * decay * sr), sr)
    kernel = np.exp(-tk / decay) * (
        np.sin(_TWO_PI * resonance * tk + 0.3) + 0.5 * np.sin(_TWO_PI * 2.3 * resonance * tk + 0.7)
    )
    kernel += 0.4 * np.exp(-tk / 0.002) * rng.standard_normal(tk.size)
    positions: list[int] = []
    start = 0.0
    while start < n / sr:
        spacing = rng.uniform(0.12, 0.18)
        positions.extend(round((start + k * spacing) * sr) for k in range(int(rng.integers(2, 4))))
        start += rng.uniform(0.25, 0.45) + 2 * spacing
    amplitudes = rng.uniform(0.7, 1.0, size=len(positions))
    return _place(np.zeros(n), kernel, positions, amplitudes)


def _synth_click(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Regular fast ticking (7-12 per second) of short 3-4.5 kHz resonant clicks."""
    resonance = _nyquist_safe(rng.uniform(3000.0, 4500.0), sr)
    decay = rng.uniform(0.001, 0.002)
    tk = _time(round(8 * decay * sr), sr)
    kernel = np.exp(-tk / decay) * np.sin(_TWO_PI * resonance * tk + 0.5)
    kernel += 0.3 * np.exp(-tk / 0.0005) * rng.standard_normal(tk.size)
    positions = _impulse_times(rng, n, sr, 1.0 / rng.uniform(7.0, 12.0), jitter=0.03)
    return _place(np.zeros(n), kernel, positions, rng.uniform(0.8, 1.0, size=positions.size))


def _synth_buzz(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bright sawtooth buzz at 120-170 Hz (rich harmonic spectrum)."""
    t = _time(n, sr)
    f0 = rng.uniform(120.0, 170.0) * (1.0 + 0.005 * np.sin(_TWO_PI * rng.uniform(3.0, 6.0) * t))
    cycles = _phase(f0, sr) / _TWO_PI + rng.uniform()
    return 2.0 * (cycles % 1.0) - 1.0


def _synth_hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low steady mains-like hum: a 55-75 Hz fundamental and five harmonics (lines up to ~450 Hz)."""
    t = _time(n, sr)
    f0 = rng.uniform(55.0, 75.0)
    amplitudes = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2)
    phases = rng.uniform(0, _TWO_PI, size=len(amplitudes))
    hum = sum(
        a * np.sin(_TWO_PI * (k + 1) * f0 * t + p)
        for k, (a, p) in enumerate(zip(amplitudes, phases, strict=True))
    )
    return hum * (1.0 + 0.05 * np.sin(_TWO_PI * rng.uniform(0.2, 0.6) * t))


def _synth_bell(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Struck chime: inharmonic decaying partials (ratios 1, 2.76, 5.40, 8.93), struck every ~1.2 s."""
    f1 = rng.uniform(560.0, 720.0)
    stretch = rng.uniform(0.7, 1.2)
    partials = [
        (ratio * f1, amplitude, decay * stretch)
        for ratio, amplitude, decay in (
            (1.0, 1.0, 1.0),
            (2.76, 0.6, 0.5),
            (5.40, 0.35, 0.3),
            (8.93, 0.2, 0.2),
        )
        if ratio * f1 < 0.45 * sr
    ]
    tk = _time(min(n, round(5 * stretch * sr)), sr)
    kernel = sum(
        a * np.exp(-tk / d) * np.sin(_TWO_PI * f * tk + rng.uniform(0.3, 2.8)) for f, a, d in partials
    )
    kernel = kernel + 0.2 * np.exp(-tk / 0.003) * rng.standard_normal(tk.size)
    positions = _impulse_times(rng, n, sr, rng.uniform(0.9, 1.6), jitter=0.1)
    return _place(np.zeros(n), kernel, positions, rng.uniform(0.8, 1.0, size=positions.size))


def _synth_trill(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bird-like trill: a 3.6-4.6 kHz tone pulsed 14-22 times per second with a chirpy FM."""
    t = _time(n, sr)
    rate = rng.uniform(14.0, 22.0)
    cycle = _TWO_PI * rate * t + rng.uniform(0, _TWO_PI)
    frequency = _nyquist_safe(rng.uniform(3600.0, 4600.0) * (1.0 + 0.05 * np.sin(cycle)), sr)
    envelope = (0.5 * (1.0 - np.cos(cycle))) ** 2
    return envelope * np.sin(_phase(frequency, sr))


def _synth_drip(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Water drops: short upward-gliding 0.9-2.6 kHz blips at random 0.12-0.45 s intervals."""
    out = np.zeros(n)
    base = rng.uniform(900.0, 1600.0)
    tb = _time(round(0.06 * sr), sr)
    position = 0
    while position < n:
        frequency = _nyquist_safe(base * rng.uniform(0.9, 1.1) * (1.0 + 0.8 * tb / 0.06), sr)
        blip = np.exp(-tb / rng.uniform(0.01, 0.02)) * np.sin(_phase(frequency, sr) + 0.4)
        _place(out, blip, [position], [rng.uniform(0.7, 1.0)])
        position += round(rng.uniform(0.12, 0.45) * sr)
    return out


def _synth_engine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Idling engine: low-passed noise (< ~450 Hz) pulsed at the firing rate (10-22 Hz)."""
    t = _time(n, sr)
    firing = rng.uniform(10.0, 22.0)
    pulses = (0.5 * (1.0 + np.cos(_TWO_PI * firing * t + rng.uniform(0, _TWO_PI)))) ** 3
    noise = _shaped_noise(rng, n, sr, low=30.0, high=rng.uniform(300.0, 600.0), order=3)
    return noise * (0.15 + 0.85 * pulses) + 0.3 * np.sin(_TWO_PI * 2.0 * firing * t)


def _synth_wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Wind: band-passed noise (~300-1200 Hz) with slow random gusts."""
    noise = _shaped_noise(rng, n, sr, low=rng.uniform(250.0, 400.0), high=rng.uniform(900.0, 1400.0), order=2)
    knots = np.arange(0.0, n / sr + 0.5, 0.5)
    gusts = np.interp(_time(n, sr), knots, rng.uniform(0.25, 1.0, size=knots.size))
    return noise * _moving_average(gusts, max(1, round(0.25 * sr)))


@dataclass(frozen=True)
class SoundEventClass:
    """One synthetic sound event class.

    Attributes:
        name: Machine name, e.g. ``"siren"`` (unique, ``[a-z_]+``).
        label: Short natural label used as the strong/weak label and in SED prompts, e.g. ``"siren"``.
        phrases: Clauses describing the event, e.g. ``("a siren wails", "an emergency siren sounds")``.
        noun_phrases: Noun phrases starting with "a"/"an", e.g. ``("a siren", "an emergency siren")``.
        synthesizer: ``f(rng, num_samples, sampling_rate) -> np.ndarray``, the raw signal generator.
        description: One line on how the sound is made.
    """

    name: str
    label: str
    phrases: tuple[str, ...]
    noun_phrases: tuple[str, ...]
    synthesizer: Callable[[np.random.Generator, int, int], np.ndarray] = field(repr=False, compare=False)
    description: str = ""

    def synthesize(self, rng: np.random.Generator, num_samples: int, sampling_rate: int) -> np.ndarray:
        """Synthesise one instance of ``num_samples`` samples (float64, peak 1, 5 ms fades).

        Every random choice (pitch, rate, decay, amplitude jitter) comes from ``rng``, so two instances
        differ slightly but stay recognisably the same class.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if sampling_rate < 1:
            raise ValueError(f"sampling_rate must be >= 1, got {sampling_rate}")
        signal = np.asarray(self.synthesizer(rng, int(num_samples), int(sampling_rate)), dtype=np.float64)
        signal = _apply_fades(signal.copy(), sampling_rate)
        peak = np.max(np.abs(signal))
        return signal / peak if peak > 0 else signal


SOUND_EVENT_CLASSES: tuple[SoundEventClass, ...] = (
    SoundEventClass(
        "beep",
        "beep",
        ("a device beeps", "an electronic beep sounds", "a beeper goes off"),
        ("a beep", "an electronic beep", "a beeping device"),
        _synth_beep,
        _synth_beep.__doc__,
    ),
    SoundEventClass(
        "whistle",
        "whistle",
        ("someone whistles", "a whistle blows", "a high whistle sounds"),
        ("a whistle", "a high whistle", "a shrill whistle"),
        _synth_whistle,
        _synth_whistle.__doc__,
    ),
    SoundEventClass(
        "rising_sweep",
        "rising sweep",
        ("a tone sweeps upward", "a rising chirp sounds", "a pitch glides up"),
        ("a rising chirp", "an upward sweep", "a rising tone"),
        _synth_rising_sweep,
        _synth_rising_sweep.__doc__,
    ),
    SoundEventClass(
        "falling_sweep",
        "falling sweep",
        ("a tone sweeps downward", "a falling chirp sounds", "a pitch glides down"),
        ("a falling chirp", "a downward sweep", "a falling tone"),
        _synth_falling_sweep,
        _synth_falling_sweep.__doc__,
    ),
    SoundEventClass(
        "siren",
        "siren",
        ("a siren wails", "an emergency siren sounds", "a siren blares"),
        ("a siren", "an emergency siren", "a wailing siren"),
        _synth_siren,
        _synth_siren.__doc__,
    ),
    SoundEventClass(
        "white_noise",
        "white noise",
        ("static hisses", "white noise hisses loudly", "a loud hiss sounds"),
        ("a burst of static", "a burst of white noise", "a loud hiss"),
        _synth_white_noise,
        _synth_white_noise.__doc__,
    ),
    SoundEventClass(
        "rumble",
        "rumble",
        ("a deep rumble rolls", "something rumbles", "a low rumble swells"),
        ("a deep rumble", "a low rumble", "a rumbling noise"),
        _synth_rumble,
        _synth_rumble.__doc__,
    ),
    SoundEventClass(
        "knock",
        "knocking",
        ("someone knocks", "something knocks on wood", "a door is knocked on"),
        ("a knock", "a knocking sound", "a wooden knock"),
        _synth_knock,
        _synth_knock.__doc__,
    ),
    SoundEventClass(
        "click",
        "clicking",
        ("something clicks rapidly", "a clock ticks", "a ratchet clicks"),
        ("a rapid clicking", "a ticking clock", "a clicking sound"),
        _synth_click,
        _synth_click.__doc__,
    ),
    SoundEventClass(
        "buzz",
        "buzzing",
        ("something buzzes", "an electric buzzer buzzes", "a harsh buzz drones"),
        ("a harsh buzz", "an electric buzz", "a buzzing sound"),
        _synth_buzz,
        _synth_buzz.__doc__,
    ),
    SoundEventClass(
        "hum",
        "hum",
        ("a machine hums", "a low hum drones", "something hums steadily"),
        ("a low hum", "an electrical hum", "a steady hum"),
        _synth_hum,
        _synth_hum.__doc__,
    ),
    SoundEventClass(
        "bell",
        "bell",
        ("a bell rings", "a chime rings out", "a bell chimes"),
        ("a bell", "a ringing bell", "a chime"),
        _synth_bell,
        _synth_bell.__doc__,
    ),
    SoundEventClass(
        "trill",
        "bird trill",
        ("a bird trills", "a high trill warbles", "a small bird chirps rapidly"),
        ("a bird trill", "a high trill", "a warbling trill"),
        _synth_trill,
        _synth_trill.__doc__,
    ),
    SoundEventClass(
        "drip",
        "dripping",
        ("water drips", "drops of water fall", "a tap drips"),
        ("a dripping tap", "a water drip", "a steady drip"),
        _synth_drip,
        _synth_drip.__doc__,
    ),
    SoundEventClass(
        "engine",
        "engine",
        ("an engine idles", "a motor runs", "an engine putters"),
        ("an idling engine", "a running motor", "an engine"),
        _synth_engine,
        _synth_engine.__doc__,
    ),
    SoundEventClass(
        "wind",
        "wind",
        ("wind blows", "the wind whooshes", "a gust of wind blows"),
        ("a gust of wind", "a howling wind", "a whoosh of wind"),
        _synth_wind,
        _synth_wind.__doc__,
    ),
)

_CLASS_LOOKUP: dict[str, SoundEventClass] = {
    **{c.label: c for c in SOUND_EVENT_CLASSES},
    **{c.name: c for c in SOUND_EVENT_CLASSES},
}


def class_names() -> list[str]:
    """Machine names of all built-in sound event classes, in definition order."""
    return [c.name for c in SOUND_EVENT_CLASSES]


def class_labels() -> list[str]:
    """Natural labels (as used in ``events`` / ``labels``) of all built-in classes, in definition order."""
    return [c.label for c in SOUND_EVENT_CLASSES]


def get_sound_event_class(name_or_label: str) -> SoundEventClass:
    """Look a built-in class up by machine name (``"drip"``) or label (``"dripping"``).

    Raises:
        ValueError: if the name is unknown; the message lists the valid names.
    """
    try:
        return _CLASS_LOOKUP[name_or_label]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown sound event class {name_or_label!r}; valid names: {', '.join(class_names())} "
            f"(labels are accepted too: {', '.join(repr(label) for label in class_labels())})"
        ) from None


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low > high:
        raise ValueError(f"{name}: min ({low}) must be <= max ({high})")
    return low, high


@dataclass
class SoundscapeConfig:
    """Every knob of the soundscape generator. Invalid settings raise ``ValueError`` on construction.

    Attributes:
        num_clips: Number of clips (used by :func:`generate_soundscapes` and the data set builders).
        seed: Base seed; clip ``i`` uses :func:`clip_rng(seed, i, split) <clip_rng>`.
        sampling_rate: Samples per second (>= 8000; every class stays below 0.45 x this rate).
        duration: Clip length in seconds.
        classes: Names (or labels) of the classes to draw from; ``None`` means all of them.
        min_events_per_clip: Fewest events in a clip (>= 1).
        max_events_per_clip: Most events in a clip.
        min_event_duration: Shortest event in seconds (>= 0.05, <= ``duration``); the clip end may truncate
            longer events but never below this.
        max_event_duration: Longest event in seconds.
        background_level_db: Range of the background noise RMS level, dB re full scale.
        event_snr_db: Range of each event's level over the background, dB (event level is the RMS over
            its active 20 ms frames, so sparse sounds such as drips are not drowned).
        add_background: Mix the background noise in. ``False`` keeps every other random draw (so the
            events are identical) but leaves the clip exactly zero outside the events.
        num_captions: Paraphrases per clip in ``captions`` (``caption`` is the first one).
        peak_level: If the mix peaks above this, the whole clip is scaled down to it (never clipped).
    """

    num_clips: int = 100
    seed: int = 0
    sampling_rate: int = 32000
    duration: float = 10.0
    classes: tuple[str, ...] | None = None
    min_events_per_clip: int = 1
    max_events_per_clip: int = 3
    min_event_duration: float = 0.4
    max_event_duration: float = 4.0
    background_level_db: tuple[float, float] = (-50.0, -35.0)
    event_snr_db: tuple[float, float] = (6.0, 20.0)
    add_background: bool = True
    num_captions: int = 5
    peak_level: float = 0.95

    def __post_init__(self) -> None:
        for name in (
            "num_clips",
            "seed",
            "sampling_rate",
            "min_events_per_clip",
            "max_events_per_clip",
            "num_captions",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))
        if self.num_clips < 0:
            raise ValueError(f"num_clips must be >= 0, got {self.num_clips}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.sampling_rate < 8000:
            raise ValueError(f"sampling_rate must be >= 8000 Hz, got {self.sampling_rate}")
        if not (self.duration > 0 and np.isfinite(self.duration)):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration!r}")
        if self.min_events_per_clip < 1:
            raise ValueError(f"min_events_per_clip must be >= 1, got {self.min_events_per_clip}")
        if self.min_events_per_clip > self.max_events_per_clip:
            raise ValueError(
                f"min_events_per_clip ({self.min_events_per_clip}) must be <= "
                f"max_events_per_clip ({self.max_events_per_clip})"
            )
        if not self.min_event_duration >= 0.05:
            raise ValueError(f"min_event_duration must be >= 0.05 s, got {self.min_event_duration!r}")
        if not np.isfinite(self.max_event_duration):
            raise ValueError(f"max_event_duration must be finite, got {self.max_event_duration!r}")
        if self.min_event_duration > self.max_event_duration:
            raise ValueError(
                f"min_event_duration ({self.min_event_duration}) must be <= "
                f"max_event_duration ({self.max_event_duration})"
            )
        if self.min_event_duration > self.duration:
            raise ValueError(
                f"min_event_duration ({self.min_event_duration}) must be <= duration ({self.duration})"
            )
        self.background_level_db = _check_range("background_level_db", self.background_level_db)
        if self.background_level_db[1] >= 0:
            raise ValueError(f"background_level_db must be below 0 dBFS, got {self.background_level_db!r}")
        self.event_snr_db = _check_range("event_snr_db", self.event_snr_db)
        if self.num_captions < 1:
            raise ValueError(f"num_captions must be >= 1, got {self.num_captions}")
        if not 0 < self.peak_level <= 1:
            raise ValueError(f"peak_level must be in (0, 1], got {self.peak_level!r}")
        if self.classes is not None:
            if isinstance(self.classes, str):
                self.classes = (self.classes,)
            resolved = tuple(get_sound_event_class(c).name for c in self.classes)
            if not resolved:
                raise ValueError(
                    f"classes must name at least one class; valid names: {', '.join(class_names())}"
                )
            self.classes = tuple(dict.fromkeys(resolved))

    @property
    def event_classes(self) -> tuple[SoundEventClass, ...]:
        """The selected :class:`SoundEventClass` objects, in definition order of ``classes``."""
        if self.classes is None:
            return SOUND_EVENT_CLASSES
        return tuple(get_sound_event_class(name) for name in self.classes)

    @property
    def num_samples(self) -> int:
        """Samples per clip."""
        return round(self.duration * self.sampling_rate)


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------

# Overlapping steps use exactly one of "while"/"as"; sequential steps exactly one of
# "then"/"before"/"after"/"followed by". No class phrase contains any of these words.
OVERLAP_CONNECTIVES: tuple[str, ...] = ("while", "as")
SEQUENCE_CONNECTIVES: tuple[str, ...] = ("then", "before", "after", "followed by")

_SINGLE_TEMPLATES = ("{a}", "{A} can be heard", "the sound of {A}", "{A} is heard")
_FIRST_SEQUENCE_TEMPLATES = (
    "{a}, then {b}",
    "{a} before {b}",
    "{A} is followed by {B}",
    "after {a}, {b}",
    "first {a}, and then {b}",
)
_FIRST_OVERLAP_TEMPLATES = ("{a} while {b}", "{a} as {b}", "while {a}, {b}", "as {a}, {b}")
_NEXT_SEQUENCE_TEMPLATES = (", then {b}", " before {b}", ", followed by {B}", ", and then {b}")
_NEXT_OVERLAP_TEMPLATES = (" while {b}", " as {b}")


def _overlap_steps(events: Sequence[Mapping[str, Any]]) -> list[bool]:
    """For events sorted by onset: does event k (k >= 1) start before an earlier one has ended?"""
    steps = []
    latest_offset = float(events[0]["offset"]) if events else 0.0
    for event in events[1:]:
        steps.append(float(event["onset"]) < latest_offset)
        latest_offset = max(latest_offset, float(event["offset"]))
    return steps


def _one_caption(
    classes: Sequence[SoundEventClass],
    repeats: Sequence[bool],
    overlaps: Sequence[bool],
    rng: np.random.Generator,
) -> str:
    clauses, nouns = [], []
    for event_class, repeat in zip(classes, repeats, strict=True):
        clause = event_class.phrases[rng.integers(len(event_class.phrases))]
        noun = event_class.noun_phrases[rng.integers(len(event_class.noun_phrases))]
        if repeat:
            clause += " again"
            noun = "another " + noun.split(" ", 1)[1]
        clauses.append(clause)
        nouns.append(noun)
    if len(classes) == 1:
        template = _SINGLE_TEMPLATES[rng.integers(len(_SINGLE_TEMPLATES))]
        return template.format(a=clauses[0], A=nouns[0])
    templates = _FIRST_OVERLAP_TEMPLATES if overlaps[0] else _FIRST_SEQUENCE_TEMPLATES
    caption = templates[rng.integers(len(templates))].format(
        a=clauses[0], A=nouns[0], b=clauses[1], B=nouns[1]
    )
    for k in range(2, len(classes)):
        templates = _NEXT_OVERLAP_TEMPLATES if overlaps[k - 1] else _NEXT_SEQUENCE_TEMPLATES
        caption += templates[rng.integers(len(templates))].format(b=clauses[k], B=nouns[k])
    return caption


def _shortest_caption(
    classes: Sequence[SoundEventClass], repeats: Sequence[bool], overlaps: Sequence[bool]
) -> str:
    clauses = [
        min(c.phrases, key=lambda p: len(p.split())) + (" again" if r else "")
        for c, r in zip(classes, repeats, strict=True)
    ]
    caption = clauses[0]
    for clause, overlap in zip(clauses[1:], overlaps, strict=True):
        caption += (" while " if overlap else ", then ") + clause
    return caption


def caption_events(
    events: Sequence[Mapping[str, Any]], rng: np.random.Generator, num_captions: int = 1
) -> list[str]:
    """Describe strong-labelled events in natural language, in time order.

    ``events`` are ``{"event_label", "onset", "offset"}`` mappings of built-in classes (label or name).
    Rule: walking through the events by onset, an event that starts while an earlier one is still sounding
    (onset < the latest offset so far) is joined with exactly one of ``OVERLAP_CONNECTIVES`` ("while", "as"), any other with exactly one of
    ``SEQUENCE_CONNECTIVES`` ("then", "before", "after", "followed by"). A class that already occurred is
    mentioned again with "... again" / "another ...". Captions are lower case, without a final period,
    and at most 25 words whenever a shortest wording allows it.

    Returns ``num_captions`` captions, distinct where the vocabulary allows; the choices of templates and
    phrases are drawn from ``rng`` (deterministic for a seeded generator).
    """
    if not events:
        raise ValueError("caption_events needs at least one event")
    ordered = sorted(events, key=lambda e: (float(e["onset"]), float(e["offset"])))
    classes = [get_sound_event_class(e["event_label"]) for e in ordered]
    repeats = [c.name in {p.name for p in classes[:k]} for k, c in enumerate(classes)]
    overlaps = _overlap_steps(ordered)
    captions: list[str] = []
    for _ in range(20 * num_captions):
        candidate = _one_caption(classes, repeats, overlaps, rng)
        if len(candidate.split()) <= _MAX_CAPTION_WORDS and candidate not in captions:
            captions.append(candidate)
            if len(captions) == num_captions:
                break
    if not captions:
        captions.append(_shortest_caption(classes, repeats, overlaps))
    distinct = len(captions)
    while len(captions) < num_captions:  # tiny vocabularies: repeat the paraphrases cyclically
        captions.append(captions[len(captions) % distinct])
    return captions


# --------------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------------


def _child(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator drawn from ``rng`` (advances ``rng`` by one fixed-size draw)."""
    return np.random.default_rng(rng.integers(0, 2**63 - 1, size=2, dtype=np.int64))


def _split_key(split_name: str | None) -> int:
    if split_name is None or split_name == "train":
        return 0
    return 1 + int.from_bytes(hashlib.sha256(split_name.encode("utf-8")).digest()[:4], "little")


def clip_rng(seed: int, index: int, split_name: str | None = None) -> np.random.Generator:
    """The random generator of clip ``index``: a function of ``(seed, index, split_name)`` only.

    ``split_name`` ``None`` and ``"train"`` share one stream; any other split name (``"validation"``,
    ``"test"``, ...) selects a disjoint stream, so held-out clips never repeat training clips.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    key = _split_key(split_name)
    return np.random.default_rng([int(seed), int(index)] + ([key] if key else []))


def generate_soundscape(rng: np.random.Generator, config: SoundscapeConfig | None = None) -> dict[str, Any]:
    """Generate one clip.

    Returns:
        ``{"audio": {"array": float32 (num_samples,), "sampling_rate": int}, "caption": str,
        "captions": list[str], "events": [{"event_label", "onset", "offset"}, ...] (sorted by onset),
        "labels": sorted unique event labels}``. Each event's onset/offset are the first sample and one
        past the last sample of its non-zero signal, divided by the sampling rate.
    """
    config = config if config is not None else SoundscapeConfig()
    sr, total = config.sampling_rate, config.num_samples
    classes = config.event_classes

    background_rms = 10.0 ** (rng.uniform(*config.background_level_db) / 20.0)
    background_rng = _child(rng)
    num_events = int(rng.integers(config.min_events_per_clip, config.max_events_per_clip + 1))
    min_length = max(1, round(config.min_event_duration * sr))
    latest_start = max(0, total - min_length)

    layout: list[tuple[SoundEventClass, int, int]] = []
    for _ in range(num_events):
        for _attempt in range(20):
            event_class = classes[rng.integers(len(classes))]
            length = max(
                min_length, round(rng.uniform(config.min_event_duration, config.max_event_duration) * sr)
            )
            start = int(rng.integers(0, latest_start + 1))
            length = min(length, total - start)
            clash = any(
                other is event_class and start < s + n and s < start + length for other, s, n in layout
            )
            if not clash:
                break
        layout.append((event_class, start, length))

    mix = np.zeros(total, dtype=np.float32)
    if config.add_background:
        # Pink noise (amplitude ~ f**-0.5 above 20 Hz); same spectrum every clip, so its gain is cached.
        mix += np.float32(background_rms) * _shaped_noise(background_rng, total, sr, low=20.0, slope=0.5)

    events = []
    for event_class, start, length in layout:
        snr_db = rng.uniform(*config.event_snr_db)
        signal = event_class.synthesize(_child(rng), length, sr)
        support = np.flatnonzero(np.abs(signal) > _SUPPORT_THRESHOLD)
        first, last = int(support[0]), int(support[-1])
        signal = signal[first : last + 1]
        gain = background_rms * 10.0 ** (snr_db / 20.0) / _active_rms(signal, sr)
        mix[start + first : start + last + 1] += gain * signal
        events.append(
            {
                "event_label": event_class.label,
                "onset": (start + first) / sr,
                "offset": (start + last + 1) / sr,
            }
        )
    events.sort(key=lambda e: (e["onset"], e["offset"], e["event_label"]))

    peak = float(np.max(np.abs(mix))) if total else 0.0
    if peak > config.peak_level:
        mix *= np.float32(config.peak_level / peak)
    captions = caption_events(events, _child(rng), config.num_captions)
    return {
        "audio": {"array": mix, "sampling_rate": sr},
        "caption": captions[0],
        "captions": captions,
        "events": events,
        "labels": sorted({e["event_label"] for e in events}),
    }


def _resolve_config(
    config: SoundscapeConfig | None, num_clips: int | None, seed: int | None, overrides: Mapping[str, Any]
) -> SoundscapeConfig:
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SoundscapeConfig)}
    if unknown:
        raise ValueError(
            f"Unknown soundscape option(s) {sorted(unknown)}; valid options: "
            f"{', '.join(f.name for f in dataclasses.fields(SoundscapeConfig))}"
        )
    changes = dict(overrides)
    if num_clips is not None:
        changes["num_clips"] = num_clips
    if seed is not None:
        changes["seed"] = seed
    return dataclasses.replace(config, **changes) if config is not None else SoundscapeConfig(**changes)


def _clip_id(seed: int, split_name: str | None, index: int) -> str:
    return f"soundscape_s{seed}_{split_name or 'train'}_{index:06d}"


def generate_soundscapes(
    num_clips: int | None = None,
    seed: int | None = None,
    *,
    split_name: str | None = None,
    config: SoundscapeConfig | None = None,
    **config_overrides: Any,
) -> list[dict[str, Any]]:
    """Generate ``num_clips`` clips with numpy only (see :func:`generate_soundscape` for the fields).

    Args:
        num_clips: Number of clips (default: ``config.num_clips``, 100).
        seed: Base seed (default: ``config.seed``, 0). Clip ``i`` depends only on ``(seed, i, split_name)``.
        split_name: Selects the random stream (``None`` = ``"train"``; see :func:`clip_rng`).
        config: Base configuration; ``num_clips``, ``seed`` and ``config_overrides`` are applied on top.
        **config_overrides: Any :class:`SoundscapeConfig` field, e.g. ``duration=5.0``.

    Each dict also carries ``clip_id``.
    """
    cfg = _resolve_config(config, num_clips, seed, config_overrides)
    clips = []
    for index in range(cfg.num_clips):
        clip = generate_soundscape(clip_rng(cfg.seed, index, split_name), cfg)
        clip["clip_id"] = _clip_id(cfg.seed, split_name, index)
        clips.append(clip)
    return clips


def encode_wav(array: np.ndarray, sampling_rate: int, subtype: str = "FLOAT") -> bytes:
    """Mono WAV file bytes: ``"FLOAT"`` (32-bit IEEE float, lossless) or ``"PCM_16"`` (x 32768, rounded).

    Written by hand rather than through soundfile because libsndfile stamps float WAV files with the
    current time (PEAK chunk), which would make the bytes differ from run to run.
    """
    samples = np.asarray(array)
    if samples.ndim != 1:
        raise ValueError(f"encode_wav expects a mono (1-D) array, got shape {samples.shape}")
    if subtype == "FLOAT":
        data = samples.astype("<f4").tobytes()
        fmt = struct.pack("<HHIIHH", 3, 1, sampling_rate, 4 * sampling_rate, 4, 32)
        extra = b"fact" + struct.pack("<II", 4, samples.size)
    elif subtype == "PCM_16":
        if samples.size and np.max(np.abs(samples)) > 1.0:
            raise ValueError("PCM_16 needs samples in [-1, 1]; normalise the waveform first")
        data = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
        fmt = struct.pack("<HHIIHH", 1, 1, sampling_rate, 2 * sampling_rate, 2, 16)
        extra = b""
    else:
        raise ValueError(f"Unsupported WAV subtype {subtype!r}; use 'FLOAT' or 'PCM_16'")
    header = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(data))
    )
    return b"".join((b"RIFF", struct.pack("<I", len(header) + len(data)), header, data))


def _features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "caption": datasets.Value("string"),
            "captions": datasets.List(datasets.Value("string")),
            "events": datasets.List(
                {
                    "event_label": datasets.Value("string"),
                    "onset": datasets.Value("float64"),
                    "offset": datasets.Value("float64"),
                }
            ),
            "labels": datasets.List(datasets.Value("string")),
            "clip_id": datasets.Value("string"),
        }
    )


def _clip_bar(total: int, split_name: str | None, progress: bool):
    """A progress bar in clips for a dataset build (tqdm, imported here: generating clips needs numpy only)."""
    from transformers.utils.logging import tqdm

    return tqdm(
        total=total, desc=f"Synthesising {split_name or 'train'} clips", unit="clips", disable=not progress
    )


def build_soundscape_dataset(
    num_clips: int | None = None,
    seed: int | None = None,
    split_name: str | None = None,
    *,
    config: SoundscapeConfig | None = None,
    wav_subtype: str = "FLOAT",
    progress: bool = False,
    **config_overrides: Any,
) -> datasets.Dataset:
    """Generate clips into an in-memory ``datasets.Dataset``.

    Columns: ``audio`` (``datasets.Audio(sampling_rate=...)``; WAV bytes named ``soundscape_{i:06d}.wav``,
    decoded through torchcodec on access), ``caption``, ``captions``, ``events``, ``labels``, ``clip_id``.
    Building needs ``datasets`` but not torchcodec. Same seed and settings give byte-identical audio and
    identical text; clip ``i`` is the same whatever ``num_clips`` is.

    Args:
        num_clips: Number of clips (default ``config.num_clips``, 100).
        seed: Base seed (default ``config.seed``, 0).
        split_name: Random stream and ``Dataset.split`` (``None``/``"train"`` share the training stream).
        config: Base configuration; the other arguments are applied on top.
        wav_subtype: ``"FLOAT"`` (default; 128 kB per second at 32 kHz, lossless) or ``"PCM_16"`` (half).
        progress: A progress bar in clips (on stderr).
        **config_overrides: Any :class:`SoundscapeConfig` field.
    """
    import datasets

    cfg = _resolve_config(config, num_clips, seed, config_overrides)
    columns: dict[str, list[Any]] = {
        name: [] for name in ("audio", "caption", "captions", "events", "labels", "clip_id")
    }
    bar = _clip_bar(cfg.num_clips, split_name, progress)
    for index in range(cfg.num_clips):
        clip = generate_soundscape(clip_rng(cfg.seed, index, split_name), cfg)
        columns["audio"].append(
            {
                "bytes": encode_wav(clip["audio"]["array"], cfg.sampling_rate, wav_subtype),
                "path": f"soundscape_{index:06d}.wav",
            }
        )
        for name in ("caption", "captions", "events", "labels"):
            columns[name].append(clip[name])
        columns["clip_id"].append(_clip_id(cfg.seed, split_name, index))
        bar.update()
    bar.close()
    split = datasets.NamedSplit(split_name) if split_name else None
    dataset = dataset_from_columns(columns, features=_features(), split=split)
    return dataset.cast_column("audio", datasets.Audio(sampling_rate=cfg.sampling_rate))


_PART_BYTES = 2**30


def dataset_from_columns(
    columns: dict[str, list[Any]], features: datasets.Features | None = None, split=None
) -> datasets.Dataset:
    """`datasets.Dataset.from_dict` for columns with an `audio` column of `{"bytes", "path"}` that may hold more than
    one Arrow binary array can (2 GiB, about 1 600 clips of 10 s as FLOAT WAV): the rows go into parts of at most
    1 GiB of audio, concatenated in order (a concatenated dataset keeps its parts as chunks)."""
    import datasets

    bounds, part_bytes = [0], 0
    for row, audio in enumerate(columns["audio"]):
        if part_bytes + len(audio["bytes"]) > _PART_BYTES and row > bounds[-1]:
            bounds.append(row)
            part_bytes = 0
        part_bytes += len(audio["bytes"])
    bounds.append(len(columns["audio"]))
    parts = [
        datasets.Dataset.from_dict(
            {name: values[start:stop] for name, values in columns.items()}, features=features, split=split
        )
        for start, stop in itertools.pairwise(bounds)
    ]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts, split=split)


def build_labelled_clip_dataset(
    clips_per_class: int,
    seed: int = 0,
    split_name: str | None = None,
    duration: float = 5.0,
    sampling_rate: int = 32000,
    classes: Sequence[str] | None = None,
    progress: bool = False,
) -> datasets.Dataset:
    """ESC-50-style single-event clips (`audio` + `label` ClassLabel) from the synthetic sound classes.

    Each clip is a soundscape ([`generate_soundscape`]) of `duration` seconds with exactly one event
    of its class (0.6 to 0.9 of the clip long) over the usual faint background. Clip `i` of class `c` is a
    function of `(seed, split_name, c, i)` only; other split names give disjoint streams (held-out clips).
    Rows are ordered class by class. `progress`: a progress bar in clips (on stderr).
    """
    import datasets

    labels = list(classes) if classes is not None else class_labels()
    audio, targets = [], []
    bar = _clip_bar(len(labels) * clips_per_class, split_name, progress)
    for class_index, label in enumerate(labels):
        config = SoundscapeConfig(
            sampling_rate=sampling_rate,
            duration=duration,
            classes=(label,),
            min_events_per_clip=1,
            max_events_per_clip=1,
            min_event_duration=0.6 * duration,
            max_event_duration=0.9 * duration,
            num_captions=1,
        )
        for index in range(clips_per_class):
            # One stream per class: the seed is offset by a large stride so no two (class, index) collide.
            clip = generate_soundscape(clip_rng(seed * 1000 + class_index, index, split_name), config)
            audio.append(
                {"bytes": encode_wav(clip["audio"]["array"], sampling_rate), "path": f"{label}_{index}.wav"}
            )
            targets.append(class_index)
            bar.update()
    bar.close()
    features = datasets.Features(
        {"audio": datasets.Audio(sampling_rate=sampling_rate), "label": datasets.ClassLabel(names=labels)}
    )
    return dataset_from_columns({"audio": audio, "label": targets}, features=features)


def build_soundscape_splits(
    num_train: int,
    num_validation: int,
    num_test: int,
    seed: int = 0,
    *,
    config: SoundscapeConfig | None = None,
    wav_subtype: str = "FLOAT",
    progress: bool = False,
    **config_overrides: Any,
) -> datasets.DatasetDict:
    """``DatasetDict`` with ``train``, ``validation`` and ``test`` splits from disjoint random streams.

    ``train`` equals ``build_soundscape_dataset(num_train, seed)``; validation and test clips come from
    their own streams (:func:`clip_rng`), so no held-out clip repeats a training clip, for any seed.
    ``progress``: a progress bar in clips per split (on stderr).
    """
    import datasets

    return datasets.DatasetDict(
        {
            split: build_soundscape_dataset(
                count,
                seed,
                split,
                config=config,
                wav_subtype=wav_subtype,
                progress=progress,
                **config_overrides,
            )
            for split, count in (("train", num_train), ("validation", num_validation), ("test", num_test))
        }
    )
