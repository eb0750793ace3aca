"""image-search: the command-line client (bulk indexing, queries, FAISS export), against the
embedded stack in this process or a running gateway, through one interface (``clients``)."""
