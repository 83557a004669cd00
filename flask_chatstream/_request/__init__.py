"""The request side: the body read within its limits (``body``), the format chosen and the chat
validated (``chat``), and the AI SDK's UI messages turned into chat messages (``uimessages``)."""
