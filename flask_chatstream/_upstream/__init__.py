"""The model provider's side: the openai client and the stream it opens (``client``, the one module
that imports openai), the HTTP/1.1 transport under it (``transport``), and the prepared request
head of the default client (``direct``)."""
