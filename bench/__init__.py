"""The benchmarks (``python -m bench.run``, ``bench.check``, ``bench.compare``, ``bench.profile``)."""

import os
from pathlib import Path

# tiktoken's files (make tokenizers), for the usage estimates and budgets of the servers a bench starts.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path(__file__).parent.parent / ".cache" / "tiktoken"))
