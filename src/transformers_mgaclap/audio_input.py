"""The audio input layer: every form of audio a user hands over becomes one validated mono float32 waveform.

Accepted forms (`AudioInput`):

| form | rate |
|---|---|
| a 1-D array or tensor `(samples,)`, or 2-D `(channels, samples)`, of floats in [-1, 1] | `sampling_rate` |
| a path to an audio file (WAV, FLAC, OGG, MP3, ...) | the file's |
| the bytes of an audio file | the file's |
| a `datasets` Audio cell: decoded (a torchcodec `AudioDecoder`, or `{"array", "sampling_rate"}`) or undecoded (`{"bytes", "path"}`) | the cell's |
| a torchcodec `AudioDecoder` | the decoder's |
| an open [`AudioSource`] | the source's |

Files and bytes are decoded with torchcodec where it is usable (it seeks exactly at the file's own rate) and with
soundfile otherwise. Channels are mixed down by their mean. Resampling is always [`resample`] (a windowed-sinc
polyphase filter), never the decoder's: torchcodec's resampler carries state across seeks, so two reads of the same
window could differ.

[`open_audio`] gives an [`AudioSource`] that reads a recording window by window, so that hours of audio never sit in
memory; [`load_audio`] reads a clip whole. Every problem (an unknown form, integer PCM, a wrong layout, empty or
non-finite audio, an unreadable file, a rate that contradicts the file) raises [`AudioInputError`], a `ValueError`
that names the input.

[`AudioLimits`] bound what opening may cost, for servers: the rate, the channels and the duration are checked on the
header, before anything is decoded; a stream whose header has no duration is counted chunk by chunk, and the count
stops as soon as it passes the limit. Audio longer than allowed raises [`AudioTooLongError`].

This module is copied next to the weights as remote code: it imports only torch, numpy and transformers; torchcodec
and soundfile are optional and imported only when a file has to be decoded.
"""

import contextlib
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.utils.import_utils import is_soundfile_available, is_torchcodec_usable

# torchaudio's `resample` defaults: sinc zero crossings per side and cut-off relative to the lower Nyquist rate.
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99
# A polyphase kernel this large (elements) means near-coprime rates, e.g. 32001 -> 32000 Hz.
_MAX_RESAMPLE_KERNEL = 1 << 26
# Samples decoded before a window and dropped: longer than the overlap of a Vorbis or MP3 block.
_SEEK_MARGIN = 8192
# Samples (all channels together) decoded at a time, 64 MiB of float32: a long read of many channels is decoded block
# by block and mixed down as it goes (each block costs a seek, so blocks stay large: 10 s of 8 channels at 192 kHz
# is one), and a stream without a declared length is counted in such blocks.
_BLOCK_ELEMENTS = 1 << 24
# libsndfile's frame count for a stream whose header does not declare its length (SF_COUNT_MAX).
_UNKNOWN_FRAMES = (1 << 63) - 1

AudioInput = Any  # see the module docstring


class AudioInputError(ValueError):
    """Audio that cannot be used: the message names the input and says what is wrong with it."""


class AudioTooLongError(AudioInputError):
    """Audio longer than the [`AudioLimits`] allow (an endpoint answers 413)."""


@dataclass(frozen=True)
class AudioLimits:
    """What [`open_audio`] accepts before it decodes anything: a bound on the work one input can cause.

    Args:
        max_seconds (`float`, *optional*): longest accepted duration.
        sampling_rates (`tuple[int, int]`, *optional*): lowest and highest accepted rate in Hz (both included).
        max_channels (`int`, *optional*): most accepted channels.
    """

    max_seconds: float | None = None
    sampling_rates: tuple[int, int] | None = None
    max_channels: int | None = None

    def check_format(self, name: str, sampling_rate: int, num_channels: int) -> None:
        """Refuse a rate or a channel count outside the limits ([`AudioInputError`])."""
        if self.sampling_rates is not None:
            low, high = self.sampling_rates
            if not low <= sampling_rate <= high:
                raise AudioInputError(
                    f"{name} is sampled at {sampling_rate} Hz; accepted rates are {low} to {high} Hz."
                )
        if self.max_channels is not None and num_channels > self.max_channels:
            raise AudioInputError(
                f"{name} has {num_channels} channels; at most {self.max_channels} are accepted: mix it down first."
            )

    def max_samples(self, sampling_rate: int) -> int | None:
        """The most samples `max_seconds` allows at `sampling_rate` (`None`: no limit)."""
        return None if self.max_seconds is None else int(self.max_seconds * sampling_rate)

    def check_length(self, name: str, num_samples: int, sampling_rate: int) -> None:
        """Refuse more samples than `max_seconds` allows ([`AudioTooLongError`])."""
        limit = self.max_samples(sampling_rate)
        if limit is not None and num_samples > limit:
            raise AudioTooLongError(f"{name} is longer than the {self.max_seconds:g} s accepted.")

    def check(self, source: "AudioSource") -> None:
        """Refuse an open source outside the limits."""
        self.check_format(source.name, source.sampling_rate, source.num_channels)
        self.check_length(source.name, source.num_samples, source.sampling_rate)


NO_LIMITS = AudioLimits()


# ---------------------------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------------------------


def _sinc_resample_kernel(orig_freq: int, new_freq: int) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc low-pass as a polyphase filter bank (the scheme of torchaudio's default `resample`).

    Args:
        orig_freq (`int`): input rate, already divided by gcd(orig_freq, new_freq).
        new_freq (`int`): output rate, already divided by the same gcd.

    Returns:
        `tuple[torch.Tensor, int]`: float64 kernel of shape `(new_freq, 1, 2 * width + orig_freq)` (one row per output
        phase) and `width`, the number of input samples the filter reaches on each side.
    """
    base_freq = min(orig_freq, new_freq) * _ROLLOFF
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig_freq / base_freq)
    taps = torch.arange(-width, width + orig_freq, dtype=torch.float64) / orig_freq
    phases = torch.arange(0, -new_freq, -1, dtype=torch.float64)[:, None] / new_freq
    # Time from each output sample to each input tap, in units of the cut-off period.
    t = ((phases + taps) * base_freq).clamp_(-_LOWPASS_FILTER_WIDTH, _LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * (math.pi / (2 * _LOWPASS_FILTER_WIDTH))) ** 2
    kernel = torch.special.sinc(t) * window * (base_freq / orig_freq)
    return kernel[:, None, :], width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample with a windowed-sinc polyphase filter (6 zero crossings, roll-off 0.99, Hann window).

    Behaves like `torchaudio.functional.resample` with its defaults, without needing torchaudio. The signal is taken
    as zero outside its ends, so the first and last ~6 output periods of the lower rate are attenuated.

    Args:
        waveform (`torch.Tensor` of shape `(..., time)`): floating-point audio.
        orig_freq (`int`): rate of `waveform` in Hz.
        new_freq (`int`): wanted rate in Hz.

    Returns:
        `torch.Tensor` of shape `(..., ceil(time * new_freq / orig_freq))`, same dtype as `waveform`.
    """
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"Sampling rates must be positive integers, got {orig_freq} and {new_freq}.")
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    taps = orig + 2 * math.ceil(_LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    if new * taps > _MAX_RESAMPLE_KERNEL:
        raise ValueError(
            f"Resampling {orig_freq} Hz -> {new_freq} Hz needs a polyphase filter with {new} phases, which is too "
            "large; resample the audio with a dedicated library first."
        )
    kernel, width = _sinc_resample_kernel(orig, new)
    shape = waveform.shape
    flat = waveform.reshape(-1, 1, shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    phases = torch.nn.functional.conv1d(padded, kernel.to(waveform.dtype), stride=orig)  # (n, new, blocks)
    resampled = phases.transpose(1, 2).reshape(flat.shape[0], -1)
    target_length = -(-shape[-1] * new // orig)
    return resampled[:, :target_length].reshape(*shape[:-1], target_length)


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


def check_sampling_rate(sampling_rate: Any, name: str = "sampling_rate") -> int:
    """A positive integer rate in Hz, or an [`AudioInputError`]."""
    if isinstance(sampling_rate, bool) or not isinstance(
        sampling_rate, (int, np.integer, float, np.floating)
    ):
        raise AudioInputError(f"`{name}` must be a positive integer in Hz, got {sampling_rate!r}.")
    if not math.isfinite(sampling_rate) or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise AudioInputError(f"`{name}` must be a positive integer in Hz, got {sampling_rate!r}.")
    return int(sampling_rate)


def _as_float_array(audio: Any, name: str) -> np.ndarray:
    """An array-like -> a floating-point numpy array `(samples,)` or `(channels, samples)`, not copied when possible."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        if audio.dtype == torch.bfloat16:
            audio = audio.float()
        audio = audio.numpy()
    try:
        array = np.asarray(audio)
    except ValueError as error:  # ragged nested lists
        raise AudioInputError(f"{name} is not a rectangular numeric array: {error}") from None
    if array.dtype.kind != "f":
        raise AudioInputError(
            f"{name} has dtype {array.dtype}; expected floating-point audio in [-1, 1]. Convert integer PCM first, "
            "e.g. `audio.astype(np.float32) / 32768` for int16."
        )
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        raise AudioInputError(
            f"{name} has shape {array.shape}; a 2-D clip must be laid out as (channels, samples). It looks like "
            "(samples, channels), as soundfile returns: transpose it (`audio.T`)."
        )
    if array.ndim not in (1, 2):
        raise AudioInputError(
            f"{name} has shape {array.shape}; expected mono (samples,) or multi-channel (channels, samples) audio."
        )
    if array.shape[-1] == 0:
        raise AudioInputError(f"{name} is empty (0 samples).")
    return array


def _checked_block(block: np.ndarray, name: str, start: int = 0, keep_float64: bool = False) -> np.ndarray:
    """Mix a `(samples,)` or `(channels, samples)` block down to mono float32 (float64 kept on request) and refuse
    non-finite samples."""
    mono = block.mean(axis=0) if block.ndim == 2 else block
    mono = np.asarray(mono, dtype=np.float64 if keep_float64 and mono.dtype == np.float64 else np.float32)
    # A finite sum proves every sample finite, far cheaper than isfinite().all(); overflow gets the full check.
    if not np.isfinite(mono.sum(dtype=np.float64)) and not np.isfinite(mono).all():
        bad = int(np.flatnonzero(~np.isfinite(mono))[0]) + start
        raise AudioInputError(f"{name} contains NaN or infinite values (first at sample {bad}).")
    return mono


def as_mono_waveform(audio: Any, name: str = "The audio", keep_float64: bool = False) -> np.ndarray:
    """Validate an in-memory clip and mix it down: `(samples,)` or `(channels, samples)` floats -> `(samples,)`.

    Args:
        audio (`np.ndarray`, `torch.Tensor` or a list of floats): the clip.
        name (`str`): how errors refer to it.
        keep_float64 (`bool`): return float64 input as float64 (otherwise float32).

    Raises:
        [`AudioInputError`]: integer samples, a wrong layout, no samples or non-finite samples.
    """
    return _checked_block(_as_float_array(audio, name), name, keep_float64=keep_float64)


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------


class AudioSource:
    """A recording that can be read window by window.

    Attributes:
        name (`str`): how errors refer to the input (its path, "the audio bytes", "The audio", ...).
        sampling_rate (`int`): the rate of the samples `read` returns, in Hz.
        num_samples (`int`): the recording's length in samples (> 0).
        num_channels (`int`): the channels `read` mixes down.
    """

    name: str
    sampling_rate: int
    num_samples: int
    num_channels: int = 1

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sampling_rate

    def read(self, start: int, length: int) -> np.ndarray:
        """Samples `[start, start + length)` mixed to mono, float32, shape `(min(length, num_samples - start),)`."""
        if start < 0 or length < 0:
            raise ValueError(f"Cannot read {length} samples from sample {start}.")
        length = max(0, min(length, self.num_samples - start))
        if length == 0:
            return np.zeros(0, dtype=np.float32)
        block = max(1, _BLOCK_ELEMENTS // self.num_channels)
        if length <= block:
            return _checked_block(self._read(start, length), self.name, start)
        mono = np.empty(length, dtype=np.float32)
        for offset in range(0, length, block):
            size = min(block, length - offset)
            mono[offset : offset + size] = _checked_block(
                self._read(start + offset, size), self.name, start + offset
            )
        return mono

    def _read(self, start: int, length: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file behind the source, if any."""


class _ArraySource(AudioSource):
    """Windows sliced out of an in-memory recording (no copy of the whole recording)."""

    def __init__(self, array: np.ndarray, sampling_rate: int, name: str):
        self.array = array
        self.sampling_rate = sampling_rate
        self.num_samples = array.shape[-1]
        self.num_channels = array.shape[0] if array.ndim == 2 else 1
        self.name = name

    def _read(self, start: int, length: int) -> np.ndarray:
        return self.array[..., start : start + length]


class _SoundFileSource(AudioSource):
    """Windows read from a file (or its bytes) with soundfile, seeking sample-exactly."""

    def __init__(self, soundfile: Any, source: Any, name: str):
        try:
            self.file = soundfile.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        except Exception as error:  # noqa: BLE001 - libsndfile reports every unreadable input its own way
            raise AudioInputError(f"Cannot decode {name}: {_reason(error)}") from None
        self.sampling_rate = int(self.file.samplerate)
        self.num_channels = int(self.file.channels)
        self.num_samples = int(self.file.frames)
        self.name = name
        problem = None
        if self.num_samples <= 0:
            problem = f"{name} is empty (0 samples)."
        elif self.num_samples >= _UNKNOWN_FRAMES:  # libsndfile can neither count nor seek such a stream
            problem = (
                f"Cannot decode {name} with soundfile: its header does not declare its length. Install torchcodec "
                '(and FFmpeg), paired with torch: pip install "transformers-mgaclap[audio]"; or re-encode the file.'
            )
        if problem:
            self.file.close()
            raise AudioInputError(problem)

    def _read(self, start: int, length: int) -> np.ndarray:
        # Lossy codecs (Vorbis, MP3) decode the first samples after a seek from an incomplete overlap: start early
        # and drop the margin, so that a window equals the same samples of a whole-file read.
        margin = min(start, _SEEK_MARGIN)
        self.file.seek(start - margin)
        return self.file.read(margin + length, dtype="float32", always_2d=True)[
            margin:
        ].T  # (channels, samples)

    def close(self) -> None:
        self.file.close()


class _DecoderSource(AudioSource):
    """Windows read from a torchcodec `AudioDecoder` at its own rate, located by the decoded samples' timestamps.

    Args:
        open_decoder (`Callable[[], AudioDecoder]`): opens the input; called again to count the samples of a stream
            without a declared duration, on decoders of their own, because a decoder asked for samples past the end
            of the stream can fail every later request.
        name (`str`): how errors refer to the input.
        limits ([`AudioLimits`]): checked before counting; the count stops once past `limits.max_seconds`.
    """

    def __init__(self, open_decoder: Callable[[], Any], name: str, limits: AudioLimits):
        self.decoder = open_decoder()
        metadata = self.decoder.metadata
        self.sampling_rate = int(metadata.sample_rate)
        self.num_channels = int(metadata.num_channels)
        self.begin = float(metadata.begin_stream_seconds or 0.0)
        self.name = name
        if metadata.duration_seconds is None:
            limits.check_format(name, self.sampling_rate, self.num_channels)
            self.num_samples = self._count(open_decoder, limits.max_samples(self.sampling_rate))
        else:
            self.num_samples = int(round(metadata.duration_seconds * self.sampling_rate))
        if self.num_samples <= 0:
            raise AudioInputError(f"{name} is empty (0 samples).")

    def _count(self, open_decoder: Callable[[], Any], limit: int | None) -> int:
        """Samples of a stream without a declared duration, decoded a chunk at a time; stops once past `limit`."""
        if limit is not None and self._decoded_until(open_decoder(), limit, 1) > limit:
            return limit + 1  # one seek shows the stream too long, without decoding what comes before
        decoder = open_decoder()
        chunk = max(1, _BLOCK_ELEMENTS // self.num_channels)
        count = 0
        while limit is None or count <= limit:
            stop = self._decoded_until(decoder, count, chunk)
            if stop < count + chunk:  # the stream ended inside this chunk
                return max(count, stop)
            count = stop
        return count

    def _decoded_until(self, decoder: Any, start: int, length: int) -> int:
        """The sample after the last one the stream holds in `[start, start + length)`, or `start` if it holds none."""
        rate = self.sampling_rate
        try:
            samples = decoder.get_samples_played_in_range(
                self.begin + start / rate, self.begin + (start + length) / rate
            )
        except RuntimeError:  # FFmpeg finds no frame there: the stream ended before
            return start
        return int(round((samples.pts_seconds - self.begin) * rate)) + samples.data.shape[-1]

    def _read(self, start: int, length: int) -> np.ndarray:
        rate = self.sampling_rate
        begin = self.begin + start / rate
        # One sample of margin on each side; the timestamps of what comes back say where the window starts.
        try:
            samples = self.decoder.get_samples_played_in_range(
                max(self.begin, begin - 1 / rate), begin + (length + 1) / rate
            )
        except RuntimeError as error:
            raise AudioInputError(f"Cannot decode {self.name} at sample {start}: {_reason(error)}") from None
        data = samples.data.numpy()
        offset = max(0, int(round((begin - samples.pts_seconds) * rate)))
        block = data[:, offset : offset + length]
        if block.shape[-1] < length:  # a header that overstates the length: the missing tail is silence
            block = np.pad(block, ((0, 0), (0, length - block.shape[-1])))
        return block


def _reason(error: Exception) -> str:
    """The useful part of a decoder's error: its first line, without FFmpeg wrappers' source locations."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^.*\.(?:cpp|c|h):\d+,\s*", "", text)


def _open_decoder(decoder_class: type, source: str | bytes, name: str) -> Any:
    """A torchcodec `AudioDecoder` of a file path or file bytes."""
    try:
        return decoder_class(source)
    except Exception as error:  # noqa: BLE001 - FFmpeg reports every unreadable input its own way
        raise AudioInputError(f"Cannot decode {name}: {_reason(error)}") from None


def _decoder_for(source: str | bytes, name: str, limits: AudioLimits) -> AudioSource:
    """A windowed source for a file path or file bytes: torchcodec where usable, else soundfile."""
    if is_torchcodec_usable(decode="audio"):
        from torchcodec.decoders import AudioDecoder

        return _DecoderSource(lambda: _open_decoder(AudioDecoder, source, name), name, limits)
    if is_soundfile_available():
        import soundfile

        return _SoundFileSource(soundfile, source, name)
    raise AudioInputError(
        f'Decoding {name} needs soundfile or torchcodec: pip install "soundfile>=0.12" (transformers-mgaclap '
        "installs it), or pass the audio as an array with its sampling rate."
    )


def _is_decoder(audio: Any) -> bool:
    """A torchcodec `AudioDecoder` (also `datasets`' subclass), recognised without importing torchcodec."""
    return hasattr(audio, "get_samples_played_in_range") and hasattr(audio, "metadata")


def _source_of(
    audio: AudioInput,
    sampling_rate: int | None,
    name: str | None,
    default_rate: int | None = None,
    limits: AudioLimits = NO_LIMITS,
) -> AudioSource:
    """Dispatch on the input's form (see the module docstring)."""
    if isinstance(audio, AudioSource):
        return audio
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        if not os.path.isfile(path):
            raise AudioInputError(f"No audio file at {path!r}.")
        return _decoder_for(path, name or repr(path), limits)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        if len(audio) == 0:
            raise AudioInputError(f"{name or 'The audio bytes'} are empty (0 bytes).")
        return _decoder_for(bytes(audio), name or "the audio bytes", limits)
    if _is_decoder(audio):
        samples = audio.get_all_samples()  # a decoder set up by its owner (e.g. `datasets`, at its own rate)
        return _ArraySource(samples.data.numpy(), int(samples.sample_rate), name or "The decoded audio")
    if isinstance(audio, Mapping):
        return _cell_source(audio, name, limits)
    if isinstance(audio, (np.ndarray, torch.Tensor, list, tuple)):
        label = name or "The audio"
        rate = sampling_rate if sampling_rate is not None else default_rate
        if rate is None:
            raise AudioInputError(f"{label} is an array: pass its `sampling_rate`.")
        return _ArraySource(_as_float_array(audio, label), rate, label)
    raise AudioInputError(
        f"Cannot read audio from a {type(audio).__name__}: pass an array (with its sampling rate), a file path, "
        "file bytes, a `datasets` Audio cell or a torchcodec AudioDecoder."
    )


def _cell_source(cell: Mapping, name: str | None, limits: AudioLimits) -> AudioSource:
    """A `datasets` Audio cell: `{"array" (or "raw"), "sampling_rate"}` decoded, `{"bytes", "path"}` undecoded."""
    path = cell.get("path")
    label = name or (repr(path) if path else "The audio cell")
    array = cell.get("array", cell.get("raw"))
    if array is not None:
        if cell.get("sampling_rate") is None:
            raise AudioInputError(f'{label} has an "array" but no "sampling_rate".')
        rate = check_sampling_rate(cell["sampling_rate"], "sampling_rate")
        return _ArraySource(_as_float_array(array, label), rate, label)
    if cell.get("bytes"):
        return _decoder_for(bytes(cell["bytes"]), label, limits)
    if path:
        return _source_of(path, None, label, limits=limits)
    raise AudioInputError(
        f'{label} holds no audio: expected "array" and "sampling_rate", or "bytes" and/or "path", got keys '
        f"{sorted(cell)}."
    )


@contextlib.contextmanager
def open_audio(
    audio: AudioInput,
    sampling_rate: int | None = None,
    name: str | None = None,
    default_rate: int | None = None,
    limits: AudioLimits | None = None,
) -> Iterator[AudioSource]:
    """Open any accepted form of audio for window-by-window reading; files are closed on exit.

    Args:
        audio: see the module docstring.
        sampling_rate (`int`, *optional*): the rate of an array. For files and cells it may be left out, or must
            equal theirs.
        name (`str`, *optional*): how errors refer to the input (default: its path, "the audio bytes", ...).
        default_rate (`int`, *optional*): the rate assumed for an array when `sampling_rate` is not given (e.g. the
            model's, as transformers' pipelines assume); without either, an array is an error.
        limits ([`AudioLimits`], *optional*): refuse a rate, channel count or duration outside them, on the header,
            before decoding (default: no limits).

    Yields:
        [`AudioSource`] at the input's own rate.

    Raises:
        [`AudioInputError`]: the input cannot be read or is outside `limits`; [`AudioTooLongError`] when it is
            longer than `limits.max_seconds`.
    """
    if sampling_rate is not None:
        sampling_rate = check_sampling_rate(sampling_rate)
    limits = limits or NO_LIMITS
    source = _source_of(audio, sampling_rate, name, default_rate, limits)
    try:
        limits.check(source)
        if sampling_rate is not None and sampling_rate != source.sampling_rate:
            raise AudioInputError(
                f"{source.name} is sampled at {source.sampling_rate} Hz but `sampling_rate={sampling_rate}` was "
                "given; leave `sampling_rate` unset for files and dataset cells."
            )
        yield source
    finally:
        if source is not audio:  # a source handed in stays open for its owner
            source.close()


def load_audio(
    audio: AudioInput,
    sampling_rate: int | None = None,
    target_rate: int | None = None,
    name: str | None = None,
    default_rate: int | None = None,
) -> tuple[np.ndarray, int]:
    """Read a clip whole: a validated mono float32 waveform and its rate.

    Args:
        audio: see the module docstring.
        sampling_rate (`int`, *optional*): the rate of an array input (see [`open_audio`]).
        target_rate (`int`, *optional*): resample to this rate ([`resample`]); default: keep the input's.
        name (`str`, *optional*): how errors refer to the input.
        default_rate (`int`, *optional*): the rate assumed for an array without `sampling_rate` (see [`open_audio`]).

    Returns:
        `tuple[np.ndarray, int]`: the waveform `(samples,)` and its rate (`target_rate` when given).
    """
    with open_audio(audio, sampling_rate, name, default_rate) as source:
        waveform = source.read(0, source.num_samples)
        rate = source.sampling_rate
    if target_rate is not None and target_rate != rate:
        target_rate = check_sampling_rate(target_rate, "target_rate")
        with (
            warnings.catch_warnings()
        ):  # read-only arrays (memory maps, decoder output) are only ever read here
            warnings.simplefilter("ignore", UserWarning)
            waveform = resample(torch.from_numpy(waveform), rate, target_rate).numpy()
        rate = target_rate
    return waveform, rate


__all__ = [
    "AudioInput",
    "AudioInputError",
    "AudioLimits",
    "AudioSource",
    "AudioTooLongError",
    "as_mono_waveform",
    "check_sampling_rate",
    "load_audio",
    "open_audio",
    "resample",
]
