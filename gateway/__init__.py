"""image-search: CLIP embeddings and BLIP captions served by Triton or in-process ONNX Runtime,
vectors in Milvus, behind HTTP and gRPC.

Packages, in the direction data flows (nothing imports a package to its left):

    server/ (HTTP, gRPC)  cli/   ->  wiring  ->  backends/  ->  core/  ->  runtime/

- ``runtime``: what runs a model and nothing else (preprocessing, tokenisation, the BLIP decode
  loop, the ONNX Runtime session factory); ``export/`` and the Triton python models use only this.
- ``core``: the operations as one service object over two protocols (inference, vector store).
- ``backends``: in-process ONNX Runtime and Triton inference; the Milvus store.
- ``wiring``: settings -> backends -> the service.
- ``server``: HTTP (FastAPI) and gRPC over the core; access control, metrics, logging.
- ``cli``: the ``image-search`` client, embedded or against a running gateway.
"""
