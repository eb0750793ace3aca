"""The HTTP API (FastAPI): app factory, one router per resource, typed dependencies, one table from
core error kinds to status codes, access control before bodies are read."""
