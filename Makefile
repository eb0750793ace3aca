# Two commands: `make serve` runs the service, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLIP_MODEL ?= openai/clip-vit-base-patch32
BLIP_MODEL ?= Salesforce/blip-image-captioning-base
REPOSITORY ?= model_repository

.PHONY: setup test serve export triton clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# the page test drives Debian's chromium (Playwright's own browser download cannot run offline)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	# a real Milvus standalone server for the tests, in its own environment (see tests/support/milvus_server.py)
	$(PYTHON) -m venv .venv-milvus
	.venv-milvus/bin/pip install --quiet milvus==2.3.5
	touch $@

test: setup
	$(PY) -m pytest

# Export the models (skipped when the repository is up to date), then serve the gateway on :8000
# with the embedded default: in-process ONNX Runtime + a Milvus Lite file under data/.
# GATEWAY_* variables configure it (see gateway/settings.py); CLIP_MODEL / BLIP_MODEL pick the models.
export: setup
	$(PY) -m export clip --model $(CLIP_MODEL) --repository $(REPOSITORY) --flavour python --cpu
	$(PY) -m export blip --model $(BLIP_MODEL) --repository $(REPOSITORY) --flavour python --cpu

serve: export
	GATEWAY_MODEL_REPOSITORY=$(REPOSITORY) $(PY) -m gateway

# The same repository on the bundled CPU tritonserver (gRPC :8001, HTTP :8000, metrics :8002); run the
# gateway against it with GATEWAY_INFERENCE_MODE=triton GATEWAY_PORT=8080 make serve.
triton: export
	$(PY) -m tests.support.tritonserver --repository $(REPOSITORY)

clean:
	rm -rf $(VENV) .venv-milvus .cache
