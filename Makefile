# Two commands do everything: `make repro` (set-up + the pipeline) and `make test` (set-up + tests).
# The venv is (re)built only when pyproject.toml or the lock file changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The default DVC remote: a folder in the user's cache that every clone on this machine shares.
# DVC's config expands neither ~ nor variables, so the path is resolved here and written into
# .dvc/config.local (ignored by git: this clone only), once, unless a default remote is set already
# (a team's in .dvc/config, or the user's own). Another folder: `make repro MNIST_DVC_REMOTE=/path`
# before the first run, or `dvc remote modify --local user-cache url /path` at any time.
MNIST_DVC_REMOTE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mnist-pipeline/dvc-remote
DVC_LOCAL_CONFIG := .dvc/config.local

.PHONY: repro remote test test-fast test-system test-ui ui serve server postgresql bench lock clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[dev]'
	$(VENV)/bin/python -c "import mnist_pipeline, pytorch_lightning, mlflow, hydra, dvc"
	touch $@

$(DVC_LOCAL_CONFIG): | $(STAMP)
	test -n "$$(dvc config core.remote)" || dvc remote add --local --default user-cache '$(MNIST_DVC_REMOTE)'
	touch $@

# `--pull`: a stage that is unchanged but whose outputs are missing (a fresh clone) takes them from the
# default remote; a stage the remote cannot serve (empty, missing, no remote) runs. Nothing changed:
# every stage is skipped before any remote is asked.
repro: $(STAMP) $(DVC_LOCAL_CONFIG)
	dvc repro --pull

# The default remote, set up if missing, and every remote DVC sees here.
remote: $(DVC_LOCAL_CONFIG)
	dvc remote list

# The `server` extra (basic-auth's Flask-WTF, the PostgreSQL driver), for `make server` and its tests.
SERVER_STAMP := $(VENV)/.installed-server
$(SERVER_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -c requirements.lock -e '.[dev,server]'
	$(VENV)/bin/python -c "import psycopg, flask_wtf"
	touch $@

# Debian's PostgreSQL (initdb, pg_ctl and the `postgres` system user), installed when missing.
postgresql:
	{ ls /usr/lib/postgresql/*/bin/pg_ctl && getent passwd postgres; } >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# Every test that needs no Debian package: unit, integration and system tiers (tests/).
test: $(STAMP)
	python -m pytest -m "not system_packages"

# The unit tier only: in-process, under a minute.
test-fast: $(STAMP)
	python -m pytest tests/unit -m "not system_packages"

# The tests that need Debian packages (chromium: the MLflow UI in a headless browser; slurm-wlm and
# munge: a one-node SLURM cluster, run as root; postgresql and the `server` extra: the team server),
# which this target installs when they are missing.
test-system: $(SERVER_STAMP) postgresql
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	{ command -v sbatch && command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; }
	python -m pytest -m system_packages

test-ui: test-system

# The team server in the foreground: PostgreSQL + MLflow with logins, on 127.0.0.1:$(PORT),
# everything in server/ (README, A team server). Ctrl-C stops both.
PORT ?= 5000
server: $(SERVER_STAMP) postgresql
	@mnist server --port $(PORT)

ui: $(STAMP)
	@mnist ui

# The champion model (mnist promote) as a REST endpoint on 127.0.0.1:5001/invocations.
serve: $(STAMP)
	@mnist serve

# Figures, not tests: the pipeline against a bare PyTorch loop (README, Performance).
bench: $(STAMP)
	dvc repro split
	mnist bench

# Re-resolve the whole dependency set into requirements.lock (run after editing pyproject.toml).
lock:
	rm -rf /tmp/mnist-pipeline-lock && $(PYTHON) -m venv /tmp/mnist-pipeline-lock
	/tmp/mnist-pipeline-lock/bin/python -m pip install -q '.[dev,server]'
	/tmp/mnist-pipeline-lock/bin/python -m pip freeze --exclude-editable --exclude mnist-pipeline \
	  | sed -E 's/^(torch==[^+]+)\+.*/\1/' > requirements.lock

clean-venv:
	rm -rf $(VENV)
