"""One stream's life in a worker: the body (``relay``), the model's side of it (``generation``,
``tool_loop``), its phases and what stops it (``lifecycle``, ``after_leave``), the client's end
(``client_side``), the watchdog loop (``watchdog``), reads with a deadline (``reader``), the live
streams of this process (``registry``), the per-client limit (``limits``), and what the WSGI
server must provide (``server``)."""
