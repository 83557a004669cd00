"""Streams that outlive their response: the journal of numbered events and its in-memory form
(``journal``), the machine's SQLite file (``sqlite``) or Redis (``redis``) that share events, stops
and slots between workers, and the body of a resume (``replay``)."""
