# Two commands: `make serve` runs the service, `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CLIP_MODEL / BLIP_MODEL: hub ids or local folders (unset: the defaults in gateway/runtime/checkpoints.py)
REPOSITORY ?= model_repository

.PHONY: setup test test-fast serve export random-models triton proto clean

# `make serve` installs what serving and exporting need (.venv/.serve); `make test` adds the test
# toolchain: tritonserver, a Milvus server, Playwright with Debian's Chromium, benchmark tools (.venv/.test).
setup: $(VENV)/.test

$(VENV)/.serve: pyproject.toml constraints.txt
	@echo "installing the gateway, ONNX Runtime, Milvus Lite and CPU torch into $(VENV) (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[export]'
	touch $@

$(VENV)/.test: $(VENV)/.serve
	@echo "installing the test toolchain into $(VENV): tritonserver, Playwright, linters (a few minutes the first time)"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# the page test drives Debian's chromium (Playwright's own browser download cannot run offline);
	# bench/photos.py takes camera-size photos from Debian's mate-backgrounds (46 MB)
	(command -v chromium >/dev/null && test -d /usr/share/backgrounds/mate) || \
		(apt-get update -qq && apt-get install -y -qq chromium mate-backgrounds)
	# a real Milvus standalone server for the tests, in its own environment (see local_servers/milvus_server.py)
	$(PYTHON) -m venv .venv-milvus
	.venv-milvus/bin/pip install --quiet milvus==2.3.5
	touch $@

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# the fast in-process subset: run it on every change
test-fast: setup
	$(PY) -m pytest -m "not integration"

# Export the models, then serve the gateway on :8000 with the embedded default: in-process ONNX
# Runtime + a Milvus Lite file under data/. GATEWAY_* variables configure it (see gateway/settings.py).
# CLIP_MODEL / BLIP_MODEL pick the models: given, the export runs (and does nothing when the repository
# is up to date); not given, a model already in the repository is served as it is (no hub access).
# CLIP_MODEL may be a SigLIP or SigLIP 2 checkpoint; TEXT_MODEL a multilingual sentence-transformers text
# tower in the CLIP's space (docs/deployment.md, model families).
# CLIP_PRECISION=int8: CLIP quantized for the CPU (gated on fp32; docs/deployment.md), fp32 by default.
export: $(VENV)/.serve
	$(if $(CLIP_MODEL)$(CLIP_PRECISION)$(TEXT_MODEL),,test -f $(REPOSITORY)/clip_text/export.json ||) \
		$(PY) -m export clip $(if $(CLIP_MODEL),--model $(CLIP_MODEL)) $(if $(CLIP_PRECISION),--precision $(CLIP_PRECISION)) \
		$(if $(TEXT_MODEL),--text-model $(TEXT_MODEL)) --repository $(REPOSITORY) --flavour python --cpu
	$(if $(BLIP_MODEL),,test -f $(REPOSITORY)/blip_caption/export.json ||) \
		$(PY) -m export blip $(if $(BLIP_MODEL),--model $(BLIP_MODEL)) --repository $(REPOSITORY) --flavour python --cpu

serve: export
	GATEWAY_MODEL_REPOSITORY=$(REPOSITORY) $(PY) -m gateway

# Without hub access: random-weight base checkpoints with the real architectures and tokenizers, for
# `make serve CLIP_MODEL=.cache/clip-base BLIP_MODEL=.cache/blip-base` (blingfire: BLIP's vocabulary offline)
random-models: $(VENV)/.serve
	@echo "installing blingfire (BERT's vocabulary for BLIP), then building random-weight CLIP and BLIP base checkpoints"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[checkpoints]'
	test -f .cache/clip-base/tokenizer.json || $(PY) -m export.random_checkpoints clip --size base --out .cache/clip-base
	test -f .cache/blip-base/tokenizer.json || $(PY) -m export.random_checkpoints blip --size base --out .cache/blip-base

# The same repository on the bundled CPU tritonserver (gRPC :8001, HTTP :8010, metrics :8002); in another
# shell: GATEWAY_INFERENCE_MODE=triton make serve
triton: export $(VENV)/.test
	$(PY) -m local_servers.tritonserver --repository $(REPOSITORY)

# Regenerate the gRPC API's Python code after editing gateway/api/image_search.proto (a test checks it is current)
proto: $(VENV)/.test
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. gateway/api/image_search.proto

clean:
	rm -rf $(VENV) .venv-milvus .cache
