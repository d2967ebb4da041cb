# The two commands the README opens with are `make run` and `make test`.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/sextant/target

.PHONY: run test e2e soak lint fmt up down bench bench-jobs bench-fanout bench-analytics bench-analysis bench-exports bench-console bench-prometheus fuzz token

TENANT ?= acme
DEV_USER ?= alice

run:  ## start all four services against local PostgreSQL and RabbitMQ
	@scripts/run.sh

test:  ## every test: unit, integration, end-to-end
	@scripts/test.sh

e2e:  ## only the end-to-end tests
	@scripts/test.sh -p sextant-e2e

soak:  ## every service twice on a 3-node RabbitMQ cluster under load, through restarts and broker faults; SOAK_SECONDS (600)
	@scripts/soak.sh

lint:  ## what CI checks besides the tests
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/module-cycles.py

fmt:
	cargo fmt --all

up:  ## everything in Docker: PostgreSQL, RabbitMQ, the four services
	docker compose up --build

down:
	docker compose down

bench:  ## every benchmark on release builds; record the figures in docs/benchmarks.md
	@scripts/bench.sh

bench-jobs:  ## the job queue (throughput, latency, 200,000-job flatness), beside Celery
	@scripts/bench.sh jobs

bench-fanout:  ## WebSocket fan-out (1,000-10,000 clients, sustained, 100 topics), beside FastAPI and a bare broadcaster
	@scripts/bench.sh fanout

bench-analytics:  ## metrics ingest, dashboard queries, live updates; beside COPY, SQL and DuckDB
	@scripts/bench.sh analytics

bench-analysis:  ## an analysis of 24 h × 50 metrics over 10 M events, beside SQL
	@scripts/bench.sh analysis

bench-exports:  ## 1 M-row CSV and XLSX, SARIF, HTML exports; beside Python csv, openpyxl and XlsxWriter
	@scripts/bench.sh exports

bench-console:  ## the web console in headless chromium: a 6-panel dashboard over 10 M events, live updates, heap over 10 min
	@scripts/bench.sh console

bench-prometheus:  ## remote-write samples/s and query_range p95, beside Prometheus itself
	@scripts/bench.sh prometheus

fuzz:  ## coverage-guided fuzzing of every parser of untrusted input, FUZZ_SECONDS (300) per target
	@scripts/fuzz.sh $(FUZZ_TARGETS)

token:  ## print a development token: make token TENANT=acme DEV_USER=alice
	@cargo build --quiet -p sextant-gateway
	@$(CARGO_TARGET_DIR)/debug/sextant-gateway token --tenant $(TENANT) --user $(DEV_USER)
