# syntax=docker/dockerfile:1.7
# Targets:
#   gateway (default)  the FastAPI gateway: slim, non-root, no compilers, no torch
#   export             a one-off job that fills a model repository: python -m export {clip,blip} ...
#   triton             NGC Triton with what the python models need: blip_caption (onnxruntime, tokenizers) and
#                      image_decode (nvImageCodec with nvJPEG, CuPy, Pillow)
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-py3
# 24.12 ships CUDA 12.6.3 (NGC release notes); the onnxruntime-gpu below must be a CUDA 12 build, or
# its CUDA provider fails to load and blip_caption refuses to start (tests/test_deployment.py checks it)
ARG TRITON_CUDA_MAJOR=12

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY export ./export
COPY gateway ./gateway
# runtime dependencies only, at the versions that are tested together
RUN /opt/venv/bin/pip install --constraint constraints.txt .

FROM ${PYTHON_IMAGE} AS gateway
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/data && chown 10001 /app/data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_MODEL_REPOSITORY=/models \
    GATEWAY_MILVUS_URI=/app/data/images.db \
    GATEWAY_PORT=8000
WORKDIR /app
USER 10001
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "gateway"]

FROM build AS export
RUN /opt/venv/bin/pip install --constraint constraints.txt ".[export]" \
    && mkdir -p /models /hf && chown 10001:10001 /models /hf
# exports run as this user: a fresh volume mounted at /models or /hf starts owned by it
USER 10001
ENTRYPOINT ["/opt/venv/bin/python", "-m", "export"]

FROM ${TRITON_IMAGE} AS triton
# blip_caption runs its decode loop in Triton's python backend: onnxruntime (GPU) and tokenizers.
# numpy<2: the python backend stub returns empty tensors with numpy 2.
# onnxruntime-gpu 1.26.0: the newest CUDA 12 build on PyPI (1.27 and later need CUDA 13, which 24.12
# does not have); the CPU tests use onnxruntime 1.32.0.
# image_decode (GATEWAY_DECODE=inference) decodes JPEGs with nvImageCodec's nvJPEG decoders (the [nvjpeg] extra:
# the hardware decoder of A100/H100 and the CUDA one) and resizes on the GPU with CuPy; both CUDA 12 builds.
# cupy-cuda12x 13.6.0: the newest CuPy for numpy 1.x (14 needs numpy 2).
RUN pip install --no-cache-dir "numpy<2" "onnxruntime-gpu==1.26.0" "tokenizers==0.23.3" "pillow==13.0.0" \
    "nvidia-nvimgcodec-cu12[nvjpeg]==0.9.0.20" "cupy-cuda12x==13.6.0"
