"""The operations of the service (index, search by image or text, get, delete, list, embed), as one
object over two protocols (inference, vector store). Transport-free: errors carry a kind
(``errors.ErrorKind``), never an HTTP or gRPC status; each server maps kinds at its edge."""
