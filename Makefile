# Qwen All-in-One: the two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
MODEL  ?=

.PHONY: run test setup model test-deps test-fast test-e2e bench ha-demo clean

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(BIN)/.runtime

## model: assemble + convert the embedded default model into models/ (once; ~2 min);
##        MODEL=NAME pulls that catalogue model instead (python -m ops.models catalog); current does not move
model: setup
	$(BIN)/python -m ops.models $(if $(MODEL),pull $(MODEL),install-default)

## run: set up, install the default model if needed, serve http://127.0.0.1:7860;
##      MODEL=NAME pulls that catalogue model if needed and serves its version (models/current does not move)
ifeq ($(MODEL),)
run: model
	$(BIN)/python app.py $(ARGS)
else
run: setup
	dir="$$($(BIN)/python -m ops.models pull $(MODEL) --print-dir)" && exec $(BIN)/python app.py --model-dir "$$dir" $(ARGS)
endif

test-deps: $(BIN)/.dev
	bash scripts/install-system-deps.sh

# The fast tier runs on torch in fp32 (the reference), then the tests that touch the model run again in
# the weight format --precision auto picks on this machine, and the engine, worker, drill and hot-swap
# tests on the llamacpp backend (its prebuilt library comes with requirements.txt).
# The e2e tier runs on what --backend auto and --precision auto pick: what users get.
MODEL_TESTS := tests/fast/test_engine.py tests/fast/test_batching.py tests/fast/test_worker.py tests/fast/test_precision.py
LLAMACPP_TESTS := tests/fast/test_llamacpp.py tests/fast/test_engine.py tests/fast/test_worker.py \
	tests/fast/test_hardening_live.py tests/fast/test_hot_swap.py tests/fast/test_app.py

test-fast: test-deps
	$(BIN)/python -m pytest tests/fast
	ALLINONE_TEST_PRECISION=auto $(BIN)/python -m pytest $(MODEL_TESTS)
	ALLINONE_TEST_BACKEND=llamacpp $(BIN)/python -m pytest $(LLAMACPP_TESTS)

test-e2e: test-deps model
	ALLINONE_TEST_BACKEND=auto ALLINONE_TEST_PRECISION=auto $(BIN)/python -m pytest tests/e2e

## test: fast tier on a tiny generated model, then the end-to-end tier on the default model
test: test-fast test-e2e

# The benchmarks `make bench` runs, in this order (each is bench/NAME.py; the others are run by hand).
BENCHES := sentiment_accuracy sentiment_latency early_exit precision chat_perf cold_start drill chaos class_load \
	failover manifest_hash hot_swap

bench: model
	for name in $(BENCHES); do $(BIN)/python bench/$$name.py || exit 1; done

## ha-demo: primary + standby (each under supervisord) behind HAProxy on 127.0.0.1:8000; Ctrl-C stops all
ha-demo: model test-deps
	$(BIN)/python -m ops.ha demo --port 8000 $(ARGS)

clean:
	rm -rf $(VENV) artifacts .pytest_cache
