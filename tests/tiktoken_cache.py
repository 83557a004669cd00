"""Fill tiktoken's cache with the encodings of OpenAI's chat models, for tests on a machine with no
route to where tiktoken downloads them (openaipublic.blob.core.windows.net), only to PyPI.

LiteLLM's wheel carries OpenAI's files under the names tiktoken's cache gives them (it ships them so
as to count tokens offline); this takes the two from a pinned wheel and keeps them only if their
SHA-256 is the one tiktoken itself expects. Run by ``make tokenizers``:

    python tests/tiktoken_cache.py .cache/tiktoken
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from flask_chatstream._usage.tokens import FILES, cache_path

WHEEL = "litellm==1.108.7"
INSIDE = "litellm/litellm_core_utils/tokenizers/"


def fill(folder: Path) -> None:
    wanted = {Path(cache_path(name)).name: (name, digest) for name, digest in FILES.items()}
    if all((folder / key).exists() for key in wanted):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        WHEEL, "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for key, (name, digest) in wanted.items():
                data = archive.read(INSIDE + key)
                if hashlib.sha256(data).hexdigest() != digest:
                    sys.exit(f"{name} in {wheel.name} is not OpenAI's file (its SHA-256 differs)")
                (folder / key).write_bytes(data)
                print(f"{name} -> {folder / key}")


if __name__ == "__main__":
    import os

    target = Path(sys.argv[1]).resolve()
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target)  # cache_path() names the files as tiktoken looks for them
    fill(target)
