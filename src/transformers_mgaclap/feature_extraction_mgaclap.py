"""Feature extractor for MGA-CLAP: the official 32 kHz log-mel front end, batched in torch.

The official model computes its log-mel spectrogram inside the network (torchlibrosa). Here that step runs before the
model: mono 32 kHz audio, padded or cropped to 10 s, periodic-Hann STFT (window 1024, hop 320, centred, reflect
padding), power spectrum, 64 Slaney mel bands between 50 Hz and 14 kHz, then `10 * log10(max(x, 1e-10))` without
`top_db` clipping. With `precision="float64"` the result equals the float64 `transformers.audio_utils.spectrogram`
with the same settings to 1e-4 dB; the default float32 STFT stays within 2e-3 dB of it on tones, sweeps, silence and
noise (both checked in the tests) and leaves the model's embeddings unchanged to 1e-4
(`benchmarks/check_feature_precision.py`).

With `enable_fusion=True` the extractor prepares LAION-CLAP feature fusion (arXiv 2211.06687 §2.3) instead: clips
longer than 10 s become four views `[global, front, middle, back]` of 1001 frames each (the log-mel of the whole clip
resized to 1001 frames, and three 10 s crops of it from the first, middle and last third of the admissible starts);
shorter clips are padded exactly as without fusion and their one log-mel is repeated four times. `is_longer` says
which path each clip took.
"""

import copy
import inspect
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.audio_utils import mel_filter_bank
from transformers.utils import TensorType, logging

from .audio_input import as_mono_waveform
from .audio_input import resample as resample_waveform

logger = logging.get_logger(__name__)

PADDING_MODES = ("repeatpad", "repeat", "zero")
TRUNCATION_MODES = ("start", "center", "random")
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_PRECISION = "float32"

# Matmul blocks of 16 mel bands: each band covers a narrow range of FFT bins, so the dense (513, 64) product
# would spend about 4x more multiply-adds on zeros.
_MEL_BLOCK_SIZE = 16
# STFT frames per block: bounds memory at ~16 MB in float64 whatever the clip length (fusion takes any length).
_FRAME_BLOCK = 2048
# Mel power floor of the log (the official `amin`): -100 dB.
_MEL_FLOOR = 1e-10
# A float32 FFT perturbs every bin of a frame of energy E (sum of its squared windowed samples) by ~eps32 * sqrt(E).
# Through the cross term 2 Re(X * error), a mel band of power P then moves by ~8.7 * eps32 * sqrt(E * S / P) dB, S
# being the band's filter-weight sum: E * S is the band's power were the frame's energy white. At 70 dB (this ratio)
# below that level a band moves by a few 1e-3 dB; further down by more (0.2 dB at the -100 dB floor under a loud
# tone or sweep: enough to move frame embeddings by 1.7e-4), so frames with such bands are redone in float64.
_FLOAT32_DYNAMIC_RANGE = 1e7
# Fusion: one global view and three local views (LAION's `mel_fusion`).
NUM_FUSION_VIEWS = 4


# Keyword arguments of `__call__`, named in the error an unknown one raises.
CALL_ARGUMENTS = (
    "sampling_rate",
    "return_tensors",
    "padding_mode",
    "truncation_mode",
    "resample",
    "generator",
)
# Arguments of other audio extractors (transformers' ClapFeatureExtractor, sequence extractors) and what to use here.
EQUIVALENTS = {
    "truncation": f"`truncation_mode` {TRUNCATION_MODES}; LAION's truncation='fusion' is `enable_fusion=True` "
    "when the extractor is built",
    "padding": f"`padding_mode` {PADDING_MODES}",
    "max_length": "`max_length_s` when the extractor is built",
    "max_length_s": "an extractor built with that `max_length_s`",
}


def unexpected_arguments_message(
    caller: str, unexpected: dict, accepted: tuple[str, ...], equivalents: dict[str, str] = EQUIVALENTS
) -> str:
    """The error for keyword arguments `caller` does not take: silently dropping them would hide a typo."""
    hints = [f"instead of `{name}` use {equivalents[name]}" for name in unexpected if name in equivalents]
    return (
        f"{caller} got unexpected keyword arguments {sorted(unexpected)}; it accepts {', '.join(accepted)}."
        + "".join(f" ({hint})" for hint in hints)
    )


def _check_choice(name: str, value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}.")
    return value


def _banded_mel_blocks(
    mel_filters: torch.Tensor, block_size: int, dtype: torch.dtype
) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Split the mel matrix into column blocks restricted to the FFT bins they use.

    Rows are duplicated so that a block multiplies the interleaved `(re², im²)` view of the spectrum directly, which
    saves forming `|S|²` as a separate tensor.

    Args:
        mel_filters (`torch.Tensor` of shape `(num_frequency_bins, num_mel_filters)`): the filter bank.
        block_size (`int`): mel bands per block.
        dtype (`torch.dtype`): dtype of the returned weights.

    Returns:
        `list` of `(first_bin, stop_bin, first_band, stop_band, weights)`, `weights` of shape
        `(2 * (stop_bin - first_bin), stop_band - first_band)`.
    """
    blocks = []
    for first_band in range(0, mel_filters.shape[1], block_size):
        stop_band = min(first_band + block_size, mel_filters.shape[1])
        used = mel_filters[:, first_band:stop_band].ne(0).any(dim=1).nonzero().flatten()
        first_bin, stop_bin = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        weights = mel_filters[first_bin:stop_bin, first_band:stop_band].repeat_interleave(2, dim=0)
        blocks.append((first_bin, stop_bin, first_band, stop_band, weights.to(dtype).contiguous()))
    return blocks


def _split_batch(raw_audio) -> list:
    """One clip or a batch of clips -> list of clips (not yet validated)."""
    if isinstance(raw_audio, (np.ndarray, torch.Tensor)):
        if raw_audio.ndim == 1:
            return [raw_audio]
        if raw_audio.ndim == 2:
            if raw_audio.shape[0] > raw_audio.shape[1]:
                raise ValueError(
                    f"A 2-D array is read as a batch of mono clips of shape (batch, samples); got shape "
                    f"{tuple(raw_audio.shape)}, which looks like one clip in (samples, channels) layout. Pass "
                    "`[audio.T]` for one multi-channel clip (expected layout (channels, samples)), or a list of 1-D "
                    "clips."
                )
            return list(raw_audio)
        raise ValueError(
            f"Expected a 1-D clip, a 2-D batch (batch, samples) or a list of clips, got an array of shape "
            f"{tuple(raw_audio.shape)}."
        )
    if isinstance(raw_audio, (list, tuple)):
        if len(raw_audio) == 0:
            raise ValueError("Got an empty batch: pass at least one clip.")
        if isinstance(raw_audio[0], numbers.Number):
            return [raw_audio]
        return list(raw_audio)
    raise ValueError(
        f"Expected audio as a numpy array, a torch tensor or a list of them, got {type(raw_audio).__name__}."
    )


def _clip_to_tensor(clip, index: int) -> torch.Tensor:
    """Validate one clip (see [`~audio_input.as_mono_waveform`]): a float32 (float64 if given so) mono `(samples,)`."""
    waveform = as_mono_waveform(clip, f"Clip {index}", keep_float64=True)
    if not waveform.flags.writeable or any(stride < 0 for stride in waveform.strides):
        waveform = waveform.copy()  # torch.from_numpy rejects both
    return torch.from_numpy(waveform)


class _Workspace:
    """Work tensors reused across the clips and frame blocks of one call.

    A fresh multi-megabyte tensor costs page faults on first touch (~0.5 ms per 8 MB measured on 2 cores): as much as
    windowing the frames, a sixth of a clip's float64 STFT.
    """

    def __init__(self):
        self._tensors: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of `shape`: the leading rows of the one kept under `(name, dtype)`,
        replaced by a larger one when it has too few rows or another row shape."""
        tensor = self._tensors.get((name, dtype))
        if tensor is None or tensor.shape[0] < shape[0] or tensor.shape[1:] != shape[1:]:
            tensor = self._tensors[(name, dtype)] = torch.empty(shape, dtype=dtype)
        return tensor[: shape[0]]


class MGAClapFeatureExtractor(SequenceFeatureExtractor):
    r"""Log-mel feature extractor of MGA-CLAP (HTS-AT front end at 32 kHz).

    Every clip is mixed down to mono, brought to exactly `max_length_s` seconds (padding or cropping the waveform,
    before the STFT, so a clip's features never depend on the rest of the batch), and turned into a log-mel
    spectrogram of `1 + max_length_s * sampling_rate // hop_length` frames (1001 for 10 s) by `feature_size` mel
    bands, time before frequency.

    Args:
        feature_size (`int`, *optional*, defaults to 64):
            Number of mel bands.
        sampling_rate (`int`, *optional*, defaults to 32000):
            Rate the model expects, in Hz.
        hop_length (`int`, *optional*, defaults to 320):
            STFT hop in samples (10 ms).
        n_fft (`int`, *optional*, defaults to 1024):
            STFT size and periodic-Hann window length in samples.
        frequency_min (`float`, *optional*, defaults to 50.0):
            Lower edge of the mel filter bank in Hz.
        frequency_max (`float`, *optional*, defaults to 14000.0):
            Upper edge of the mel filter bank in Hz.
        max_length_s (`float`, *optional*, defaults to 10.0):
            Every clip is padded or cropped to this duration.
        padding_mode (`str`, *optional*, defaults to `"repeatpad"`):
            How shorter clips are filled: `"repeatpad"` tiles the clip as many whole times as fit and fills the rest
            with `padding_value` (the official SED / LAION convention); `"repeat"` tiles and cuts; `"zero"` appends
            `padding_value`.
        truncation_mode (`str`, *optional*, defaults to `"start"`):
            Which part of a longer clip is kept: `"start"` (official inference), `"center"` or `"random"`.
        padding_value (`float`, *optional*, defaults to 0.0):
            Sample value used for padding.
        return_attention_mask (`bool`, *optional*, defaults to `False`):
            Kept for the `SequenceFeatureExtractor` interface; `input_features_mask` is always returned.
        enable_fusion (`bool`, *optional*, defaults to `False`):
            Prepare LAION feature fusion for a model with `enable_fusion=True`: `input_features` gets shape
            `(batch, 4, num_frames, feature_size)` and `is_longer` is returned. A clip with more frames than
            `num_frames` (longer than `max_length_s` by at least one hop) gets a global view (its whole log-mel,
            bilinearly resized to `num_frames` frames, as LAION and transformers do: no anti-aliasing) and three local
            crops of `num_frames` frames of that log-mel, one from each third of the admissible start frames
            (`np.array_split` into 3, an empty third falls back to start 0, as LAION). Which start in each third is set
            by the truncation mode: `"start"` its first, `"center"` its middle, `"random"` a uniform draw from
            `generator` (LAION's training procedure). Every other clip is padded / cropped as without fusion and
            its log-mel is repeated in the four channels.
        precision (`str`, *optional*, defaults to `"float32"`):
            dtype of the STFT and mel product, `"float32"` or `"float64"`. Features are float32 either way.
            `"float64"` matches the float64 `transformers.audio_utils` recipe to < 1e-5 dB on any signal.
            `"float32"` (~3x faster on broadband audio) computes every frame in float32, then redoes with a float64
            FFT the frames where float32 rounding could move a band lying more than 70 dB below the frame's energy
            (pure tones, sweeps, digital silence around loud sounds, sharply low-passed audio): it stays within
            2e-3 dB of float64 on such signals and moves the embeddings of the paper-geometry model by < 1e-5. A
            clip whose every frame is redone (a steady pure tone) costs ~1.1x its float64 time.
            Saved extractors keep their setting: a `preprocessor_config.json` without the key loads with this
            default, one with `"precision": "float64"` (written by every save while float64 was the default) stays
            float64; drop the key, or pass `precision=` to `from_pretrained`, to change it.

    Example:

    ```python
    >>> import numpy as np
    >>> extractor = MGAClapFeatureExtractor()
    >>> clips = [np.zeros(32000, dtype=np.float32), np.zeros((2, 400000), dtype=np.float32)]
    >>> inputs = extractor(clips, sampling_rate=32000, return_tensors="pt")
    >>> inputs["input_features"].shape, inputs["input_features_mask"].shape
    (torch.Size([2, 1001, 64]), torch.Size([2, 1001]))
    >>> fused = MGAClapFeatureExtractor(enable_fusion=True)(clips, sampling_rate=32000, return_tensors="pt")
    >>> fused["input_features"].shape, fused["is_longer"].tolist()
    (torch.Size([2, 4, 1001, 64]), [False, True])
    ```
    """

    model_input_names = ["input_features", "input_features_mask"]

    def __init__(
        self,
        feature_size: int = 64,
        sampling_rate: int = 32000,
        hop_length: int = 320,
        n_fft: int = 1024,
        frequency_min: float = 50.0,
        frequency_max: float = 14000.0,
        max_length_s: float = 10.0,
        padding_mode: str = "repeatpad",
        truncation_mode: str = "start",
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        precision: str = DEFAULT_PRECISION,
        enable_fusion: bool = False,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.frequency_min = frequency_min
        self.frequency_max = frequency_max
        self.max_length_s = max_length_s
        self.padding_mode = _check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.truncation_mode = _check_choice("truncation_mode", truncation_mode, TRUNCATION_MODES)
        self.precision = _check_choice("precision", precision, tuple(PRECISIONS))
        self.enable_fusion = bool(enable_fusion)
        # What the model's forward takes from this extractor's output (pipelines and Trainer filter inputs by it).
        if self.enable_fusion:
            self.model_input_names = [*type(self).model_input_names, "is_longer"]
        if self.max_samples <= n_fft // 2:
            raise ValueError(
                f"`max_length_s * sampling_rate` ({self.max_samples} samples) must exceed n_fft // 2 ({n_fft // 2}) "
                "for reflect padding."
            )
        mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=feature_size,
            min_frequency=frequency_min,
            max_frequency=frequency_max,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.mel_filters = torch.from_numpy(mel_filters).float()  # (n_fft // 2 + 1, feature_size)
        # float64: a float32 window alone raises the leakage floor enough to move quiet bands by ~0.01 dB.
        self.window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        # Built from the float64 bank so that the float64 path is not limited by float32 filter weights.
        self._mel_blocks = _banded_mel_blocks(
            torch.from_numpy(mel_filters), _MEL_BLOCK_SIZE, PRECISIONS[self.precision]
        )
        # (feature_size,): in float32, a frame with a band below its energy times this is redone in float64.
        self._float32_band_floor = self.mel_filters.sum(dim=0) / _FLOAT32_DYNAMIC_RANGE

    @property
    def max_samples(self) -> int:
        """Length in samples every clip is padded or cropped to (320 000 by default)."""
        return int(round(self.max_length_s * self.sampling_rate))

    @property
    def num_frames(self) -> int:
        """Frames per clip, `1 + max_samples // hop_length` (1001 by default)."""
        return 1 + self.max_samples // self.hop_length

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict[str, Any], **kwargs):
        """Build an extractor from saved settings; keyword arguments of `__init__` override or complete them.

        transformers drops overrides of settings the saved file lacks, so `from_pretrained(path, precision="float64")`
        on a `preprocessor_config.json` written without `precision` would silently give the float32 default.
        """
        init_arguments = inspect.signature(cls.__init__).parameters
        overrides = {
            name: kwargs.pop(name) for name in list(kwargs) if name in init_arguments and name != "kwargs"
        }
        return super().from_dict({**feature_extractor_dict, **overrides}, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Serialise the settings, without the mel filters, the window and other derived tensors.

        Returns:
            `dict[str, Any]`: the JSON-serialisable attributes and `feature_extractor_type`.
        """
        output = {
            key: copy.deepcopy(value)
            for key, value in self.__dict__.items()
            if key not in ("mel_filters", "window", "model_input_names") and not key.startswith("_")
        }
        output["feature_extractor_type"] = self.__class__.__name__
        return output

    def __call__(
        self,
        raw_audio: np.ndarray | torch.Tensor | list,
        sampling_rate: int | None = None,
        return_tensors: str | TensorType | None = None,
        padding_mode: str | None = None,
        truncation_mode: str | None = None,
        resample: bool = False,
        generator: torch.Generator | None = None,
        **unexpected,
    ) -> BatchFeature:
        """Compute log-mel features for one clip or a batch of clips.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor` or `list`):
                One mono clip (1-D array or tensor, or a list of floats); a batch as a list or tuple of clips, each
                1-D `(samples,)` or 2-D `(channels, samples)` (mixed down by the channel mean); or a 2-D array or
                tensor `(batch, samples)` of mono clips. Floating-point values, nominally in [-1, 1]; integer PCM is
                rejected.
            sampling_rate (`int`, *optional*):
                Rate of `raw_audio` in Hz. Always pass it: when omitted, the extractor's rate is assumed.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.
            padding_mode (`str`, *optional*):
                Overrides `self.padding_mode` for this call.
            truncation_mode (`str`, *optional*):
                Overrides `self.truncation_mode` for this call.
            resample (`bool`, *optional*, defaults to `False`):
                Resample clips whose `sampling_rate` differs from `self.sampling_rate` (windowed-sinc, see
                [`~audio_input.resample`]). Without it a different rate is an error.
            generator (`torch.Generator`, *optional*):
                Random source for `truncation_mode="random"`, for reproducible crops.

        Returns:
            [`BatchFeature`] with
            - `input_features` of shape `(batch, num_frames, feature_size)`, float32 log-mel in dB; with
              `enable_fusion`, `(batch, 4, num_frames, feature_size)`;
            - `input_features_mask` of shape `(batch, num_frames)`, int64: 1 for frames whose centre sample
              (`t * hop_length`) lies in the clip's own audio, 0 for frames centred in padding (tiled copies count
              as padding); all ones for fused clips;
            - with `enable_fusion` only, `is_longer` of shape `(batch,)`, bool: True for clips embedded through the
              fusion path (global + local views), False for clips padded or cropped to `max_length_s`.
        """
        if unexpected:
            raise TypeError(unexpected_arguments_message(type(self).__name__, unexpected, CALL_ARGUMENTS))
        padding_mode = _check_choice("padding_mode", padding_mode or self.padding_mode, PADDING_MODES)
        truncation_mode = _check_choice(
            "truncation_mode", truncation_mode or self.truncation_mode, TRUNCATION_MODES
        )
        sampling_rate = self._check_sampling_rate(sampling_rate, resample)
        clips = [_clip_to_tensor(clip, index) for index, clip in enumerate(_split_batch(raw_audio))]
        if sampling_rate != self.sampling_rate:
            clips = [resample_waveform(clip, sampling_rate, self.sampling_rate) for clip in clips]
        if self.enable_fusion:
            return self._fusion_features(clips, padding_mode, truncation_mode, generator, return_tensors)
        if truncation_mode != "random" and any(clip.shape[-1] > self.max_samples for clip in clips):
            # Random crops are a training choice; a deterministic crop at inference silently drops audio.
            logger.warning_once(
                f"Clips longer than {self.max_length_s:g} s are cropped to one {self.max_length_s:g} s window "
                f"(truncation_mode={truncation_mode!r}). To embed whole clips use a fused model and extractor "
                "(enable_fusion=True), or average the embeddings of consecutive windows."
            )
        fitted = [self._fit_to_length(clip, padding_mode, truncation_mode, generator) for clip in clips]
        features = self._log_mel_spectrogram([waveform for waveform, _ in fitted])
        mask = self._frame_mask([valid for _, valid in fitted])
        return BatchFeature(
            {"input_features": features.numpy(), "input_features_mask": mask.numpy()},
            tensor_type=return_tensors,
        )

    def _check_sampling_rate(self, sampling_rate: int | None, resample: bool) -> int:
        if sampling_rate is None:
            logger.warning(
                f"It is strongly recommended to pass the `sampling_rate` argument to `{self.__class__.__name__}()`; "
                f"assuming {self.sampling_rate} Hz. Failing to do so can result in silent errors that might be hard "
                "to debug."
            )
            return self.sampling_rate
        if sampling_rate != self.sampling_rate and not resample:
            raise ValueError(
                f"The model expects audio sampled at {self.sampling_rate} Hz, got sampling_rate={sampling_rate}. "
                f"Pass `resample=True` to resample it here, or resample to {self.sampling_rate} Hz beforehand."
            )
        return sampling_rate

    def _fit_to_length(
        self,
        waveform: torch.Tensor,
        padding_mode: str,
        truncation_mode: str,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Pad or crop one clip to `max_samples`.

        Args:
            waveform (`torch.Tensor` of shape `(samples,)`): mono audio.
            padding_mode (`str`): one of `PADDING_MODES`.
            truncation_mode (`str`): one of `TRUNCATION_MODES`.
            generator (`torch.Generator`, *optional*): random source for `"random"` crops.

        Returns:
            `tuple[torch.Tensor, int]`: the waveform of shape `(max_samples,)` and how many of its leading samples are
            the clip's own audio (all of them for a cropped clip).
        """
        length, target = waveform.shape[-1], self.max_samples
        if length >= target:
            if truncation_mode == "start":
                offset = 0
            elif truncation_mode == "center":
                offset = (length - target) // 2
            else:
                offset = int(torch.randint(0, length - target + 1, (1,), generator=generator))
            return waveform[offset : offset + target], target
        if padding_mode == "repeat":
            return waveform.repeat(-(-target // length))[:target], length
        repeats = target // length if padding_mode == "repeatpad" else 1
        padded = waveform.new_full((target,), self.padding_value)
        padded[: repeats * length] = waveform.repeat(repeats)
        return padded, length

    def _frame_mask(self, valid_lengths: list[int]) -> torch.Tensor:
        """`(batch, num_frames)` int64 mask: 1 where the frame centre `t * hop_length` is inside the clip's audio.

        A clip that needed no padding is all ones: its last frame, centred just past the final sample, sees reflected
        audio rather than padding.
        """
        centres = torch.arange(self.num_frames) * self.hop_length
        lengths = torch.tensor(valid_lengths)
        lengths = torch.where(lengths >= self.max_samples, centres[-1] + 1, lengths)
        return (centres[None, :] < lengths[:, None]).long()

    def _log_mel_spectrogram(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        """Log-mel spectrogram of clips that all have `max_samples` samples.

        Clips are processed one at a time through work tensors reused across the batch: an STFT over the whole batch
        at once materialises ~130 MB of frames and spectra per 32 clips and measured 2-3x slower on 2 CPU cores.

        Args:
            waveforms (`list[torch.Tensor]`): `batch` tensors of shape `(max_samples,)`.

        Returns:
            `torch.Tensor` of shape `(batch, num_frames, feature_size)`, float32, in dB.
        """
        workspace = _Workspace()
        return torch.stack([self._log_mel(waveform, workspace) for waveform in waveforms])

    def _log_mel(self, waveform: torch.Tensor, workspace: _Workspace) -> torch.Tensor:
        """`(samples,)` clip -> `(1 + samples // hop_length, feature_size)` float32 log-mel in dB, in frame blocks."""
        frames = self._stft_frames(waveform, workspace)
        mel = torch.empty(frames.shape[0], self.feature_size)
        for first in range(0, frames.shape[0], _FRAME_BLOCK):
            block = frames[first : first + _FRAME_BLOCK]
            mel[first : first + block.shape[0]] = self._mel_power(block, workspace)
        return mel.clamp_(min=_MEL_FLOOR).log10_().mul_(10.0)

    def _stft_frames(self, waveform: torch.Tensor, workspace: _Workspace) -> torch.Tensor:
        """Unwindowed STFT frames `(1 + samples // hop_length, n_fft)` of one clip: a view (frames overlap) of the
        clip centred with reflect padding, as torch.stft(center=True, pad_mode="reflect") does. In the clip's dtype,
        so that the float32 path's float64 recomputation reads the clip's own samples.
        """
        half, length = self.n_fft // 2, waveform.shape[-1]
        padded = workspace.get("padded", (length + 2 * half,), waveform.dtype)
        padded[half : half + length] = waveform
        padded[:half] = waveform[1 : half + 1].flip(0)
        padded[half + length :] = waveform[length - half - 1 : length - 1].flip(0)
        return padded.unfold(0, self.n_fft, self.hop_length)

    def _mel_power(self, frames: torch.Tensor, workspace: _Workspace) -> torch.Tensor:
        """Mel power `(n, feature_size)`, float32, of `(n, n_fft)` unwindowed frames, in `self.precision`.

        In float32, the frames whose quiet bands float32 rounding may have moved (see `_FLOAT32_DYNAMIC_RANGE`) are
        recomputed from the clip's own samples with a float64 FFT.
        """
        if self.precision == "float64":
            return self._windowed_mel_power(self._windowed(frames, self.window, workspace))
        windowed = self._windowed(frames, self.window.float(), workspace)
        energy = torch.linalg.vector_norm(windowed, dim=-1, keepdim=True).square_()
        power = self._windowed_mel_power(windowed)
        unreliable = (energy * self._float32_band_floor > power.clamp(min=_MEL_FLOOR)).any(dim=-1)
        if unreliable.all():  # steady tones: skips gathering the frames and scattering their rows
            return self._windowed_mel_power(self._windowed(frames, self.window, workspace))
        if unreliable.any():
            exact = self._windowed(frames[unreliable], self.window, workspace)
            power[unreliable] = self._windowed_mel_power(exact)
        return power

    def _windowed(self, frames: torch.Tensor, window: torch.Tensor, workspace: _Workspace) -> torch.Tensor:
        """`frames * window` in the window's dtype, into a reused work tensor: a converting copy, then an in-place
        product (2-3x faster than one mixed-dtype product)."""
        return workspace.get("windowed", tuple(frames.shape), window.dtype).copy_(frames).mul_(window)

    def _windowed_mel_power(self, windowed: torch.Tensor) -> torch.Tensor:
        """Mel power `(n, feature_size)`, float32, of `(n, n_fft)` windowed frames: the FFT in their dtype, the mel
        product in `self.precision` (a float64 spectrum rounded to float32 for it moves bands by ~1e-6 dB)."""
        # Squaring the interleaved (re, im) pairs in place; the duplicated mel rows add them up in the matmul.
        squared = torch.view_as_real(torch.fft.rfft(windowed, dim=-1)).square_().flatten(-2)
        squared = squared.to(PRECISIONS[self.precision])
        power = torch.empty(windowed.shape[0], self.feature_size)
        for first_bin, stop_bin, first_band, stop_band, weights in self._mel_blocks:
            power[:, first_band:stop_band] = squared[:, 2 * first_bin : 2 * stop_bin] @ weights
        return power

    # -- LAION feature fusion -----------------------------------------------------------------------------------

    def _fusion_features(
        self,
        clips: list[torch.Tensor],
        padding_mode: str,
        truncation_mode: str,
        generator: torch.Generator | None,
        return_tensors: str | TensorType | None,
    ) -> BatchFeature:
        """Four views per clip, `(batch, 4, num_frames, feature_size)`, plus the mask and `is_longer`."""
        # Longer = the whole clip has more STFT frames than one 10 s input; a clip less than a hop over 10 s has
        # the same frame count (LAION stacks it x4 unfused too) and is cropped like any unfused clip.
        is_longer = [1 + clip.shape[-1] // self.hop_length > self.num_frames for clip in clips]
        features = torch.empty(len(clips), NUM_FUSION_VIEWS, self.num_frames, self.feature_size)
        mask = torch.ones(len(clips), self.num_frames, dtype=torch.long)
        short = [index for index, longer in enumerate(is_longer) if not longer]
        if short:
            fitted = [
                self._fit_to_length(clips[index], padding_mode, truncation_mode, generator) for index in short
            ]
            features[short] = self._log_mel_spectrogram([waveform for waveform, _ in fitted])[:, None]
            mask[short] = self._frame_mask([valid for _, valid in fitted])
        for index, longer in enumerate(is_longer):
            if longer:
                features[index] = self._fusion_views(
                    self._long_log_mel(clips[index]), truncation_mode, generator
                )
        return BatchFeature(
            {
                "input_features": features.numpy(),
                "input_features_mask": mask.numpy(),
                "is_longer": np.asarray(is_longer, dtype=bool),
            },
            tensor_type=return_tensors,
        )

    def fusion_crop_starts(
        self, total_frames: int, truncation_mode: str = "start", generator: torch.Generator | None = None
    ) -> list[int]:
        """First frames of the front, middle and back local views of a log-mel of `total_frames` frames.

        The admissible starts `0 .. total_frames - num_frames` are split into three nearly equal contiguous parts
        (`np.array_split`; an empty part becomes `[0]`, as LAION's `get_audio_features`); one start is taken from
        each: the first (`"start"`), the middle (`"center"`) or a uniform draw from `generator` (`"random"`).
        """
        parts = np.array_split(np.arange(total_frames - self.num_frames + 1), 3)
        parts = [part if len(part) else np.zeros(1, dtype=np.int64) for part in parts]
        if truncation_mode == "start":
            return [int(part[0]) for part in parts]
        if truncation_mode == "center":
            return [int(part[len(part) // 2]) for part in parts]
        return [int(part[int(torch.randint(len(part), (1,), generator=generator))]) for part in parts]

    def _fusion_views(
        self, log_mel: torch.Tensor, truncation_mode: str, generator: torch.Generator | None
    ) -> torch.Tensor:
        """`(total_frames, feature_size)` log-mel -> `(4, num_frames, feature_size)` [global, front, middle, back]."""
        # LAION resizes with torchvision `Resize` (bilinear, no anti-aliasing in the releases it trained with) and
        # transformers with `F.interpolate(..., "bilinear")`: the same, kept for compatibility of the views. In
        # float64: float32 source coordinates are off by up to ~1e-3 frames at 37 s (worse for longer clips).
        global_view = F.interpolate(
            log_mel.double()[None, None],
            size=(self.num_frames, self.feature_size),
            mode="bilinear",
            align_corners=False,
        )[0, 0].float()
        starts = self.fusion_crop_starts(log_mel.shape[0], truncation_mode, generator)
        return torch.stack([global_view] + [log_mel[start : start + self.num_frames] for start in starts])

    def _long_log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel of one clip of any length, the recipe of [`_log_mel_spectrogram`].

        Args:
            waveform (`torch.Tensor` of shape `(samples,)`), with more than `n_fft // 2` samples.

        Returns:
            `torch.Tensor` of shape `(1 + samples // hop_length, feature_size)`, float32, in dB.
        """
        return self._log_mel(waveform, _Workspace())


__all__ = ["MGAClapFeatureExtractor"]
