"""Processor for MGA-CLAP: the log-mel feature extractor and a BERT tokenizer behind one call."""

from transformers import BatchFeature, ProcessorMixin

# The official text encoder keeps 30 WordPiece tokens, [CLS] and [SEP] included (official-implementation §5).
MAX_TEXT_LENGTH = 30


class MGAClapProcessor(ProcessorMixin):
    r"""
    Wraps an [`MGAClapFeatureExtractor`] and a BERT tokenizer.

    Text is tokenised as the official MGA-CLAP: at most 30 tokens including [CLS] and [SEP], truncated, padded to
    the longest caption of the batch. Audio goes through the feature extractor (32 kHz, 10 s, log-mel).

    Example:

    ```python
    >>> inputs = processor(text=["a dog barks"], audio=waveform, sampling_rate=32000, return_tensors="pt")
    >>> sorted(inputs.keys())
    ['attention_mask', 'input_features', 'input_features_mask', 'input_ids', 'token_type_ids']
    ```
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        max_length: int = MAX_TEXT_LENGTH,
        **audio_kwargs,
    ) -> BatchFeature:
        """Tokenise `text` and/or extract features of `audio`.

        Args:
            text (`str` or `list[str]`, *optional*): captions or class names; empty strings are an error.
            audio (*optional*): one waveform or a list of waveforms (see [`MGAClapFeatureExtractor.__call__`]).
            sampling_rate (`int`, *optional*): rate of `audio`; a rate other than the extractor's is an error
                unless `resample=True` is passed.
            return_tensors (`str`, *optional*): `"pt"`, `"np"`, ...
            max_length (`int`, *optional*, defaults to 30): token limit, special tokens included.
            audio_kwargs: passed to the feature extractor (`padding_mode`, `truncation_mode`, `resample`, ...).

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `token_type_ids` (text) and `input_features`,
            `input_features_mask` (audio).
        """
        if text is None and audio is None:
            raise ValueError("Pass `text`, `audio` or both to the processor.")
        encoding = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts:
                raise ValueError("`text` is an empty list.")
            for index, caption in enumerate(texts):
                if not isinstance(caption, str) or not caption.strip():
                    raise ValueError(
                        f"Text {index} is empty or not a string ({caption!r}): nothing to embed."
                    )
            encoding.update(
                self.tokenizer(
                    texts,
                    padding="longest",
                    truncation=True,
                    max_length=max_length,
                    return_tensors=return_tensors,
                )
            )
        if audio is not None:
            encoding.update(
                self.feature_extractor(
                    audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **audio_kwargs
                )
            )
        return BatchFeature(data=encoding, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(
            dict.fromkeys(self.tokenizer.model_input_names + self.feature_extractor.model_input_names)
        )


__all__ = ["MGAClapProcessor"]
