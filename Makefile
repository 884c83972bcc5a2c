# Polyframe: every command a developer or CI needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

UV_VERSION := 0.13.8
PYTHON ?= python3
TOOLS := .tools
# uv never downloads a Python: it uses the machine's (3.11 or newer).
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null)
export UV_LINK_MODE ?= copy

# A uv already on PATH is used as is; otherwise a pinned one is bootstrapped from PyPI
# into .tools/ (nothing is installed outside the checkout).
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/uv-venv/bin/uv)
VENV_STAMP := .venv/.synced
PYTEST := $(UV) run --frozen --no-sync pytest

PORT ?= 8080
DATA_DIR ?= .data
WORKERS ?= 1
# make up OTLP_ENDPOINT=http://127.0.0.1:4318 sends traces there; DRILLS=1 enables the fault
# drills; INSTRUMENTATION=off turns metrics and traces off (to measure what they cost).
OTLP_ENDPOINT ?=
DRILLS ?=
INSTRUMENTATION ?= on
# make up POSTGRES=postgresql://postgres@127.0.0.1:5432/postgres keeps the databases there.
POSTGRES ?=

# Kubernetes on kind (docs/kubernetes.md): needs docker, kind, kubectl, helm and skaffold.
KIND_CLUSTER := polyframe
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KIND_NAMESPACE := polyframe
KIND_INGRESS_URL := http://localhost:8080
TRAEFIK_CHART_VERSION := 37.3.0
KIND_BUILD_FILE := $(DATA_DIR)/kind/skaffold-build.json
KIND_TOOLS := docker kind kubectl helm skaffold
KIND_RELEASE := polyframe
# Where tests/e2e (cluster mode) writes the release's logs, events and status on a failure; the
# workflow uploads test-artifacts/.
KIND_DIAGNOSTICS_DIR := test-artifacts/e2e-cluster

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(TOOLS)/uv-venv/bin/uv:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Polyframe needs Python 3.11 or newer as $(PYTHON); set PYTHON=python3.11")'
	@echo "bootstrapping uv $(UV_VERSION) from PyPI into $(TOOLS)/ …"
	@$(PYTHON) -m venv $(TOOLS)/uv-venv
	@$(TOOLS)/uv-venv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode compiled once here, for the venv and the workspace's sources: where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines) no process ever writes a .pyc,
# and each Python process the tests start (services, workers, CLIs: hundreds in make test) would
# compile every module it imports again, 1-2 s of CPU each. A .pyc older than its source is
# ignored, so an edited module is only compiled in memory again, as it was without these.
$(VENV_STAMP): uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml) Makefile | $(UV)
	@echo "installing the workspace from uv.lock (and compiling its bytecode) …"
	@$(UV) sync --frozen --all-packages --compile-bytecode
	@$(UV) run --frozen --no-sync python -m compileall -q -j 0 $(wildcard libs/*/src services/*/src tools/*/src)
	@touch $@

.PHONY: install
install: $(VENV_STAMP) ## install every package of the workspace into .venv (from uv.lock)

.PHONY: up
up: $(VENV_STAMP) ## run the whole platform behind Traefik (PORT=8080 DATA_DIR=.data WORKERS=1 OTLP_ENDPOINT= DRILLS= INSTRUMENTATION=on POSTGRES=); Ctrl-C stops it
	@$(UV) run --frozen --no-sync polyframe-dev up --port $(PORT) --data-dir $(DATA_DIR) --workers $(WORKERS) \
		$(if $(OTLP_ENDPOINT),--otlp-endpoint $(OTLP_ENDPOINT)) $(if $(DRILLS),--drills) \
		$(if $(filter off,$(INSTRUMENTATION)),--no-instrumentation) $(if $(POSTGRES),--postgres $(POSTGRES))

.PHONY: bench
bench: $(VENV_STAMP) ## the framework comparison measured here on PostgreSQL (needs Debian's wrk): bench/results/ and docs/benchmarks.md; about 15-20 minutes
	@$(UV) run --frozen --no-sync polyframe-bench run --update-docs

# make soak SOAK_SECONDS=60: a shorter soak (RSS growth is asserted only from 120 s after warm-up).
SOAK_SECONDS ?= 300

.PHONY: soak
soak: $(VENV_STAMP) ## mixed load through Traefik for SOAK_SECONDS (300), then: no 5xx, writes exactly once, audit trail complete, RSS growth < 10%
	@$(UV) run --frozen --no-sync polyframe-bench soak --seconds $(SOAK_SECONDS)

# make fuzz FUZZ_SECONDS=60: a shorter run per service.
FUZZ_SECONDS ?= 300

.PHONY: fuzz
fuzz: $(VENV_STAMP) ## grow the in-process fuzzers' corpus (tools/polyframe-fuzz/corpus/) for FUZZ_SECONDS (300) per service, minimised; stops at a crash with the input saved; commit the corpus
	@for service in users-fastapi legacy-flask admin-django; do \
		$(UV) run --frozen --no-sync polyframe-fuzz run $$service --seconds $(FUZZ_SECONDS) --grow || exit 1; \
	done

.PHONY: dashboards
dashboards: $(VENV_STAMP) ## write observability/grafana/dashboards/*.json from tools/polyframe-dashboards (grafana-foundation-sdk); commit both
	@$(UV) run --frozen --no-sync polyframe-dashboards

.PHONY: routes
routes: $(VENV_STAMP) ## print the Traefik routes generated from deploy/routes.yaml
	@$(UV) run --frozen --no-sync polyframe-dev config

.PHONY: test
test: lint typecheck test-unit test-observability test-deploy test-e2e test-release ## the whole suite: lint, types, unit tests (SQLite and PostgreSQL), rules and dashboards, deploy checks, e2e through Traefik, the kind release run as containers

.PHONY: test-unit
test-unit: $(VENV_STAMP) ## in-process tests of every library and service (each service also imported in a venv of only its own dependencies)
	@$(PYTEST) libs services tools

.PHONY: test-e2e
test-e2e: $(VENV_STAMP) ## start the real platform on free ports and drive it through Traefik (or E2E_BASE_URL)
	@$(PYTEST) tests/e2e

.PHONY: test-observability
test-observability: $(VENV_STAMP) ## Prometheus rules (promtool check and unit tests), Grafana dashboards, collector config
	@$(PYTEST) tests/observability

.PHONY: test-deploy
test-deploy: $(VENV_STAMP) ## Kubernetes delivery without a cluster: generated files fresh, hadolint, Helm v4 render and strict lint, schemas, policies, skaffold and kind
	@$(PYTEST) tests/deploy

# The kind release without a cluster (docs/kubernetes.md): images built with podman (docker where
# its engine runs), the rendered release run as containers. RELEASE_PORT=0: a free port.
RELEASE_STATE := $(DATA_DIR)/release
RELEASE_PORT ?= 0
# make images ENGINE=podman: the release runner runs what podman holds (auto: a running docker first).
ENGINE ?= auto
RELEASE := $(UV) run --frozen --no-sync polyframe-release

.PHONY: images
images: $(VENV_STAMP) ## build the images skaffold builds (podman here, docker where its engine runs), with sizes and build times
	@$(RELEASE) images --state-dir $(RELEASE_STATE) --engine $(ENGINE)

.PHONY: release-up
release-up: $(VENV_STAMP) ## run the kind release as containers, from `make images` (RELEASE_PORT=0); returns once all is ready
	@$(RELEASE) up --detach --state-dir $(RELEASE_STATE) --port $(RELEASE_PORT)

.PHONY: release-down
release-down: $(VENV_STAMP) ## stop the release `make release-up` runs: pods deleted gracefully, containers and network removed
	@$(RELEASE) down --state-dir $(RELEASE_STATE)

.PHONY: release-e2e
release-e2e: ENGINE = podman
release-e2e: images ## images, the release as containers, helm test, tests/e2e in cluster mode from here and in the release, then stop it
	@$(RELEASE) e2e --state-dir $(RELEASE_STATE) --port $(RELEASE_PORT)

# make test runs the whole suite from the host against the release, and in the release (the
# verify Job) what only runs differently there: the cluster checks (in-cluster API, RBAC, pod
# loss), the in-cluster ingress, and the credentials read from the Secrets (authorization).
RELEASE_VERIFY_TESTS := tests/e2e/test_e2e_cluster.py tests/e2e/test_e2e_ingress.py tests/e2e/test_e2e_authz.py

.PHONY: test-release
test-release: $(VENV_STAMP) ## the images and the kind release as containers: tests/release (faults, the PostgreSQL image), then release-e2e's run
	@if ! command -v podman >/dev/null; then \
		echo "test-release: the release runs with podman: apt-get install podman runc netavark aardvark-dns iptables debootstrap"; \
		if [ "$${POLYFRAME_STRICT_TOOLS:-}" = 1 ]; then exit 1; fi; echo "test-release: skipped"; exit 0; fi; \
	$(RELEASE) images --state-dir $(RELEASE_STATE) --engine podman && \
	RELEASE_STATE_DIR=$(RELEASE_STATE) $(PYTEST) tests/release && \
	$(RELEASE) e2e --state-dir $(RELEASE_STATE) --port $(RELEASE_PORT) --verify-tests "$(RELEASE_VERIFY_TESTS)"

.PHONY: kind-up
kind-up: ## create the kind cluster, install Traefik (Helm), build and deploy the platform (skaffold, kind profile)
	@for tool in $(KIND_TOOLS); do command -v $$tool >/dev/null || { echo "kind-up needs $$tool on PATH (see docs/kubernetes.md)"; exit 1; }; done
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || kind create cluster --config deploy/kind/cluster.yaml --wait 180s
	@helm repo add traefik https://traefik.github.io/charts --force-update >/dev/null
	@helm upgrade --install traefik traefik/traefik --version $(TRAEFIK_CHART_VERSION) \
		--kube-context $(KIND_CONTEXT) --namespace traefik --create-namespace \
		--values deploy/kind/traefik-values.yaml --wait --timeout 5m
	@mkdir -p $(dir $(KIND_BUILD_FILE))
	@env -u E2E_BASE_URL skaffold build --profile kind --kube-context $(KIND_CONTEXT) --file-output $(KIND_BUILD_FILE)
	@env -u E2E_BASE_URL skaffold run --profile kind --kube-context $(KIND_CONTEXT) --status-check=true
	@echo "Polyframe is up on kind at $(KIND_INGRESS_URL)"

.PHONY: kind-e2e
kind-e2e: kind-up $(VENV_STAMP) ## helm test, then tests/e2e in cluster mode against kind from the host and in the cluster (skaffold verify); both always run, fails if either fails
	@# helm test first: the suite checks that its Pods succeeded (and says which did not, with
	@# the diagnostics), so a failure here does not stop the run.
	@helm test $(KIND_RELEASE) --kube-context $(KIND_CONTEXT) --namespace $(KIND_NAMESPACE) --logs \
		|| echo "helm test failed: tests/e2e names the Pod that did not succeed"
	@rm -rf $(KIND_DIAGNOSTICS_DIR)
	@# The credentials the suite reads, from the release's Secrets. One that cannot be read stops
	@# here: without it the tests that need it would skip instead of failing. Only the host's run
	@# is given them; the verify Job reads the same Secrets itself (deploy/kind/verify-job.yaml),
	@# and skaffold runs with PATH, HOME, KUBECONFIG and DOCKER_* only, so nothing else of this
	@# machine's environment can reach the cluster through it. Both runs always run; the target
	@# fails, saying which, if either failed.
	@secret() { \
		local value; \
		value="$$(kubectl --context $(KIND_CONTEXT) --namespace $(KIND_NAMESPACE) \
			get secret "$$1" -o jsonpath="{.data.$$2}")" && [ -n "$$value" ] \
			&& printf '%s' "$$value" | base64 --decode && return; \
		echo "kind-e2e: cannot read key $$2 of Secret $$1 (namespace $(KIND_NAMESPACE)," \
			"context $(KIND_CONTEXT)). Is the release deployed with deploy/kind/values.yaml?" \
			"Run 'make kind-up'; 'kubectl --context $(KIND_CONTEXT) --namespace" \
			"$(KIND_NAMESPACE) describe secret $$1' lists the keys it has." >&2; \
		return 1; \
	}; \
	users_fastapi="$$(secret polyframe-credentials users-fastapi)" \
		&& legacy_flask="$$(secret polyframe-credentials legacy-flask)" \
		&& admin_django="$$(secret polyframe-credentials admin-django)" \
		&& staff_acting="$$(secret polyframe-admin-django-demo-staff support-acting)" \
		&& staff_readonly="$$(secret polyframe-admin-django-demo-staff support-readonly)" \
		|| exit 1; \
	echo "kind-e2e: tests/e2e from the host, against $(KIND_INGRESS_URL)"; \
	host=0; E2E_BASE_URL=$(KIND_INGRESS_URL) E2E_KUBE_CONTEXT=$(KIND_CONTEXT) \
		E2E_KUBE_NAMESPACE=$(KIND_NAMESPACE) E2E_HELM_RELEASE=$(KIND_RELEASE) \
		E2E_DIAGNOSTICS_DIR=$(KIND_DIAGNOSTICS_DIR) \
		E2E_USERS_FASTAPI_SECRET="$$users_fastapi" E2E_LEGACY_FLASK_SECRET="$$legacy_flask" \
		E2E_ADMIN_DJANGO_SECRET="$$admin_django" E2E_STAFF_SUPPORT_ACTING="$$staff_acting" \
		E2E_STAFF_SUPPORT_READONLY="$$staff_readonly" $(PYTEST) tests/e2e || host=$$?; \
	echo "kind-e2e: tests/e2e in the cluster (skaffold verify)"; \
	keep=(); for name in $$(compgen -e); do \
		case $$name in PATH|HOME|KUBECONFIG|DOCKER_*) keep+=("$$name=$${!name}");; esac; \
	done; \
	cluster=0; env -i "$${keep[@]}" skaffold verify --profile kind \
		--kube-context $(KIND_CONTEXT) --build-artifacts $(KIND_BUILD_FILE) || cluster=$$?; \
	if [ $$host -eq 0 ] && [ $$cluster -eq 0 ]; then \
		echo "kind-e2e: tests/e2e passed from the host and in the cluster"; exit 0; fi; \
	if [ $$host -eq 0 ]; then echo "kind-e2e: tests/e2e from the host passed"; else \
		echo "kind-e2e: tests/e2e from the host failed (exit $$host): its report is above, the" \
			"release's logs, events and status in $(KIND_DIAGNOSTICS_DIR)/"; fi; \
	if [ $$cluster -eq 0 ]; then echo "kind-e2e: tests/e2e in the cluster passed"; else \
		echo "kind-e2e: tests/e2e in the cluster (skaffold verify) failed (exit $$cluster): its" \
			"report is above (skaffold streams the Job's log)"; fi; \
	exit 1

.PHONY: kind-down
kind-down: ## delete the kind cluster (and everything in it)
	@command -v kind >/dev/null || { echo "kind-down needs kind on PATH"; exit 1; }
	@kind delete cluster --name $(KIND_CLUSTER)

.PHONY: generate
generate: $(VENV_STAMP) ## write the charts' env, secret files and values schemas and the Dockerfiles from services/*/service.yaml
	@$(UV) run --frozen --no-sync python -m polyframe_dev.generate

# Every workspace member: the folders holding a pyproject.toml below libs/, services/, tools/.
MEMBERS := $(patsubst %/pyproject.toml,%,$(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml))

.PHONY: lint
lint: $(VENV_STAMP) ## ruff lint and format check; deptry: each member declares what it imports, and uses what it declares
	@$(UV) run --frozen --no-sync ruff check .
	@$(UV) run --frozen --no-sync ruff format --check .
	@for member in $(MEMBERS); do \
		echo "deptry $$member"; \
		$(UV) run --frozen --no-sync deptry --config $$member/pyproject.toml $$member/src \
			|| { echo "lint: deptry found undeclared or unused dependencies in $$member"; exit 1; }; \
	done

.PHONY: fmt
fmt: $(VENV_STAMP) ## format and auto-fix
	@$(UV) run --frozen --no-sync ruff format .
	@$(UV) run --frozen --no-sync ruff check --fix .

.PHONY: typecheck
typecheck: $(VENV_STAMP) ## mypy (strict) over every package
	@ADMIN_ENVIRONMENT=development $(UV) run --frozen --no-sync mypy $(wildcard libs/*/src services/*/src tools/*/src)

.PHONY: lock
lock: | $(UV) ## re-resolve uv.lock after changing a pyproject.toml
	@$(UV) lock

.PHONY: clean
clean: ## remove the venv, caches and tools (keeps the data folder)
	rm -rf .venv $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

.PHONY: clean-data
clean-data: ## delete the local data folder (databases, generated keys and credentials)
	rm -rf $(DATA_DIR)
