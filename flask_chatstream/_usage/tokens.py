"""The model's tokenizer: tiktoken's encodings, read from tiktoken's own cache and never downloaded.

tiktoken fetches its files from the internet on first use. A request must not wait on the internet
(nor a deployment that has none fail), so this module only loads an encoding whose file is already in
tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else the temp folder's
``data-gym-cache``, as tiktoken looks) and tiktoken checks the file's hash as it reads it. Fill the cache
at build time (docs/howto/cost-control.md). Where the model's encoding is unknown or not there, counts
follow the rule of thumb OpenAI gives: one token per four characters (one warning per encoding).

An encoding costs about 80 MB and half a second to load, once per process, on the first count (the
first stopped stream), in a native thread so a gevent worker's other streams go on meanwhile. Budgets
do not need it: a request's hold bounds its prompt by its bytes (``estimate.prompt_bound``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
from typing import Any

from .. import _gevent

log = logging.getLogger("flask_chatstream")

CHARS_PER_TOKEN = 4
"""The rule where no tokenizer is at hand."""

_BLOBS = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
FILES = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
"""The encodings of OpenAI's chat models (gpt-4o, gpt-4.1, o-series, gpt-5; gpt-4 and gpt-3.5) and their
files' SHA-256, as tiktoken knows them: checked here first, since tiktoken fetches a file that fails it."""
_ENCODINGS: dict[str, Any] = {}
"""Loaded encodings by name; None for one that could not be had (the rule counts for it). Looked for
once per process."""
_LOADING: dict[str, Any] = {}
"""One lock per encoding, held while it loads: the streams that need it meanwhile wait for that one load
(under gevent, cooperatively) instead of each loading its own 80 MB."""



def tokenizer_name(model: str) -> str | None:
    """tiktoken's encoding for ``model`` (``o200k_base`` for gpt-4o, gpt-4.1, o-series and gpt-5), or None."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = str(tiktoken.encoding_name_for_model(model))
    except KeyError:
        return None
    return name if name in FILES else None


def cache_path(name: str) -> str:
    """Where tiktoken keeps encoding ``name``'s file (its own rule: the SHA-1 of the file's address)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") \
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return os.path.join(folder, hashlib.sha1(_BLOBS.format(name).encode()).hexdigest())


_BY_MODEL: dict[str, Any] = {}
"""Loaded encodings by model name (a request counts several strings of one model)."""


def encoding(model: str) -> Any:
    """The loaded tiktoken encoding for ``model``, or None (unknown model, or its file is not cached)."""
    try:
        return _BY_MODEL[model]
    except KeyError:
        pass
    found = _BY_MODEL[model] = _encoding(model)
    return found


def _encoding(model: str) -> Any:
    name = tokenizer_name(model)
    if name is None:
        return None
    if name not in _ENCODINGS:
        # (the lock is made here, at the first count, so that it is gevent's where gevent patched threading)
        with _LOADING.setdefault(name, threading.Lock()):
            if name not in _ENCODINGS:  # not loaded by the stream this one waited for
                _gevent.offload(lambda: _load(name))
    return _ENCODINGS[name]


def _load(name: str) -> None:
    found, path = None, cache_path(name)
    if os.path.exists(path):
        if _sha256(path) == FILES[name]:
            import tiktoken

            found = tiktoken.get_encoding(name)
        else:
            log.warning("usage: tiktoken's %s in its cache (%s) is damaged; estimates count one token per %d "
                        "characters", name, path, CHARS_PER_TOKEN)
    else:
        log.warning("usage: tiktoken's %s is not in its cache (%s), and flask_chatstream never downloads it; "
                    "estimates count one token per %d characters until it is (see the cost control how-to)",
                    name, os.path.dirname(cache_path(name)), CHARS_PER_TOKEN)
    _ENCODINGS[name] = found


def _sha256(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def count_tokens(text: str, model: str) -> int:
    """How many tokens ``text`` is for ``model``: by its tokenizer, else by the rule."""
    if not text:
        return 0
    found = encoding(model)
    if found is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return len(found.encode_ordinary(text))
