"""MGA-CLAP for Hugging Face Transformers (placeholder, filled in as modules land)."""
