"""Token counts for answers the upstream did not count: a stopped, cut or timed-out stream.

``tokens`` loads the model's tokenizer (tiktoken's files, from its cache, never the internet);
``estimate`` counts a request and an answer's parts as OpenAI bills them.
"""

from .estimate import estimate_usage, prompt_tokens, reservation
from .tokens import count_tokens, tokenizer_name

__all__ = ["count_tokens", "estimate_usage", "prompt_tokens", "reservation", "tokenizer_name"]
