"""What runs a model and nothing else: image preprocessing, CLIP tokenisation, the BLIP decode loop
and the one ONNX Runtime session factory.

Imports numpy, Pillow, onnxruntime and tokenizers only (no web framework, no Milvus client, no
metrics, no settings): the export uses it, and it is copied as it is into the Triton python models
(``<model>/1/gateway/runtime/``), so the repository carries the code its models run.
"""
