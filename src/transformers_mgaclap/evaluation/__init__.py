"""Zero-shot evaluation as the official protocols: task runners (`tasks`), frame-level scores for SED and grounding
(`frames`), the validation of their reference events (`validation`), plots of frame similarity over reference events
(`plots`), held-out synthetic sets (`synthetic`), the retrieval metrics (`retrieval`) and result files (`report`).
`examples/evaluate_zero_shot.py` is its command line."""
