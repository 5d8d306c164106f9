# Ferry: the two commands are `make demo` and `make test`. Both install what is
# missing (apt-get, Debian 12) before they do their job.

CARGO ?= cargo
.DEFAULT_GOAL := help

.PHONY: help deps test-deps contract-deps web web-deps build build-debug guest demo demo-down test test-pg-stop clean-lab bench-scale bench-guests bench-migration bench-evacuate bench-sim-moves bench-drs bench-dashboard bench-faults bench-tunnel fmt lint

help:
	@echo "make demo        build, start the lab (control plane + 3 hosts in namespaces), Ctrl-C to stop"
	@echo "make demo-down   remove what a crashed demo left behind"
	@echo "make test        run every test (unit, end-to-end on real PostgreSQL, agents in namespaces, QEMU guests)"
	@echo "make deps        only install what is missing (says what and from where first)"
	@echo "make guest       build the test guest image into target/guest"
	@echo "make bench-scale control-plane scale benchmark (sim hosts), writes bench/results/scale.json"
	@echo "make bench-guests guest boot time, QEMU RSS, guests per host, writes bench/results/guests.json"
	@echo "make bench-migration Ferry vs raw QEMU live migration, writes bench/results/migration.json"
	@echo "make bench-evacuate maintenance: evacuate a lab host of 8 guests over 1 Gbit/s vs raw QEMU one at a time, writes bench/results/evacuate.json"
	@echo "make bench-drs   a balancing pass over 64 hosts / 8,000 VMs, and against brute force, writes bench/results/drs.json"
	@echo "make bench-dashboard the VM list with 40,000 VMs in headless Chromium, writes bench/results/dashboard.json"
	@echo "make bench-faults the randomized fault campaign (ROUNDS=40, SEED=...), writes bench/results/faults.json"
	@echo "make bench-sim-moves 200 live migrations at once across 64 sim hosts, writes bench/results/sim_moves.json"
	@echo "make bench-tunnel the migration tunnel's throughput and CPU per GB beside plain TCP, writes bench/results/tunnel.json"

deps:
	@./deploy/install-deps.sh

# deps plus what only the tests need: Node.js/npm, Chromium + ChromeDriver, promtool.
test-deps:
	@FERRY_DEPS=test ./deploy/install-deps.sh

# The dashboard's packages from the npm registry, exactly as web/package-lock.json
# pins them (uPlot for charts, axe-core for the browser tests' accessibility check).
web-deps:
	@./deploy/web-deps.sh

# Refreshes the vendored chart library (web/vendor, committed so a plain
# `cargo build` of a fresh checkout works) from web/node_modules; the test
# `dashboard::vendored_assets_match_the_lockfile` checks they agree.
web: web-deps
	cp web/node_modules/uplot/dist/uPlot.iife.min.js web/node_modules/uplot/dist/uPlot.min.css web/vendor/

build: deps
	$(CARGO) build --workspace --release --bins

build-debug: deps
	$(CARGO) build --workspace --bins

# The test guest: Debian's cloud kernel + an initrd with busybox and ferry-guest.
guest: deps
	./deploy/guest/build.sh

demo: build guest
	./deploy/lab.sh up

demo-down:
	./deploy/lab.sh down

# Every test; the test PostgreSQL server (target/test-pg) and any lab leftovers are
# removed afterwards whatever the outcome.
# schemathesis from PyPI (tests/contract-requirements.txt) in target/schemathesis,
# for the API contract test (tests/tests/api_contract.rs).
contract-deps: test-deps
	@./deploy/contract-deps.sh

test: test-deps build-debug guest web-deps contract-deps
	@./deploy/lab.sh clean-tests
	@status=0; $(CARGO) test --workspace --no-fail-fast -- --test-threads=4 || status=$$?; \
	  $(MAKE) --no-print-directory test-pg-stop; ./deploy/lab.sh clean-tests; exit $$status

test-pg-stop:
	@./deploy/test-pg-stop.sh

clean-lab:
	./deploy/lab.sh down
	./deploy/lab.sh clean-tests

bench-scale: build
	./target/release/ferry-bench-scale --out bench/results/scale.json

bench-guests: build guest
	./target/release/ferry-bench-guests --out bench/results/guests.json; ./deploy/test-pg-stop.sh

bench-migration: build guest
	./target/release/ferry-bench-migration --out bench/results/migration.json; ./deploy/test-pg-stop.sh

bench-evacuate: build guest
	./target/release/ferry-bench-evacuate --out bench/results/evacuate.json; ./deploy/test-pg-stop.sh

bench-sim-moves: build
	./target/release/ferry-bench-sim-moves --out bench/results/sim_moves.json

bench-tunnel: build
	./target/release/ferry-bench-tunnel --out bench/results/tunnel.json

bench-drs: build
	./target/release/ferry-bench-drs --out bench/results/drs.json

bench-faults: build guest test-deps
	./target/release/ferry-bench-faults --rounds $${ROUNDS:-40} $${SEED:+--seed $$SEED} --out bench/results/faults.json; s=$$?; ./deploy/test-pg-stop.sh; exit $$s

bench-dashboard: build test-deps
	./target/release/ferry-bench-dashboard --out bench/results/dashboard.json

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
