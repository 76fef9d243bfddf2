"""Inference Endpoints entry point, copied into published repositories as `handler.py`.

The endpoint imports this file from the repository and builds `EndpointHandler(path)`. It loads the repository's own
`endpoint_handler.py` (copied next to it with the flat modules it imports) through transformers' remote-code
loader, so the endpoint runs the same code as the package without installing it. Nothing is read at import time.
"""

import os

from transformers.dynamic_module_utils import get_class_from_dynamic_module


class EndpointHandler:
    """Serves the repository in `path` (default: the folder of this file); see `endpoint_handler.py`."""

    def __init__(self, path: str = ""):
        path = path or os.path.dirname(os.path.abspath(__file__))
        implementation = get_class_from_dynamic_module("endpoint_handler.MGAClapEndpointHandler", path)
        self.handler = implementation(path)

    def __call__(self, data: dict) -> list | dict:
        return self.handler(data)
