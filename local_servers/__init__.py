"""Real servers started on this machine, for the tests, the benchmarks and the Makefile: the
tritonserver bundled in the nvidia-pytriton wheel, a Milvus 2.3.5 standalone server (from
.venv-milvus), the gateway under uvicorn (in a thread or as a process). Free ports, a readiness
poll, and a stop that takes every child with it."""
