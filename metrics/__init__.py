"""`evaluate` metric modules, one folder each (`evaluate.load("metrics/<name>")`).

Installed as `transformers_mgaclap.metrics` (see `setup.cfg`), so that the evaluation library finds them in a wheel
too. Each module stands alone: `evaluate` copies a single file, so none of them imports the package.
"""
