"""Pure: no Flask, no openai. Upstream bytes become SSE payloads (``sse``), typed events
(``events``) and the answer so far (``answer``); events become each format's bytes (``encoders``)."""
