"""Model card templates, installed as `transformers_mgaclap.model_cards` (see `setup.cfg`)."""
