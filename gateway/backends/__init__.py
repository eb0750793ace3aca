"""Implementations of the core's protocols: inference in-process (ONNX Runtime, micro-batched) or on
Triton (gRPC), and the Milvus vector store. Constructed with plain arguments (gateway.wiring reads
the settings); failures become core ServiceErrors."""
