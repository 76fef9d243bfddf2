"""Extensions from the literature around MGA-CLAP, built on the package's embedding API: TeminAL-style temporal
post-training and its ZSTE-style evaluation (`temporal`), and few-shot recognition with Tip-Adapter, the Treff adapter
and a multi-grained cache (`few_shot`). Both are reconstructions: docs/reconstructions.md says what is published."""
