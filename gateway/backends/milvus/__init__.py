"""The vector store on Milvus (a Lite file or a server), the only code that knows Milvus's syntax and
client: connection.py (the client, the Lite file's lock, calls with deadlines and a retry), schema.py
(the collection's fields and indexes), expressions.py (conditions as Milvus expressions), store.py
(the VectorStore protocol), flusher.py (sealing segments after bulk loads), migration.py (rebuilding
a collection made before keyword search)."""

from .store import MilvusOptions, MilvusStore

__all__ = ["MilvusOptions", "MilvusStore"]
