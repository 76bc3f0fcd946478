"""Fail fast when the Hugging Face hub cannot be reached.

huggingface_hub retries an unreachable host for about 25 s before giving up with a message
that does not mention the local alternatives. One short TCP probe answers the same question
in at most `timeout_s` seconds, and callers turn a 'no' into a UsageError that names them.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants as hub_constants

OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_unavailable_reason(timeout_s: float = 2.0) -> str | None:
    """Why the hub cannot be used (an offline setting, or no connection in time), or None if it can."""
    for name in OFFLINE_ENV_VARS:
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{name} is set"
    endpoint = urlparse(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"{hub_constants.ENDPOINT} is unreachable ({error})"
