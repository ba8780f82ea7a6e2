# Set-up, tests, demo and benchmarks. Every target uses the project's own venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

LAKE ?= lake
NOTEBOOK_LAKE ?= demo/lake
CLUSTER_DIR ?= .cluster
CLUSTER_PORT ?= 7077
CLUSTER_WEBUI_PORT ?= 8080

.PHONY: setup test test-chaos test-fast demo notebooks-html train-rephrase train-failure-points quality-cross quality-cross-week quality-labels bench-ingest bench-pipeline bench-pipeline-model bench-rephrase bench-rewrites bench-failure-points ab clean cluster-up cluster-demo cluster-down bench-kafka kafka-up kafka-down demo-kafka

## setup: create .venv, install the pinned dependencies and the package, fetch the Delta jars once
setup:
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m feedback.core.jars

## test: the whole suite (real Spark, Delta, Great Expectations, a standalone cluster, the notebooks; about 40 minutes on 2 cores) except the chaos test
test:
	$(PY) -m pytest -m "not chaos"

## test-chaos: SIGKILL `feedback stream` and `feedback mine-rewrites` a dozen times over a simulated week; every table must end as a clean run's (about 20 minutes)
test-chaos:
	FEEDBACK_CHAOS_REPORT=$${FEEDBACK_CHAOS_REPORT:-chaos-report.json} $(PY) -m pytest -m chaos tests/integration/test_chaos.py

## test-fast: the unit suite, tests/unit (one local Spark session, hand-written frames; under 5 minutes on 2 cores)
test-fast:
	$(PY) -m pytest tests/unit

## kafka-up: start a local single-node Kafka broker (KRaft) under .kafka/ and print its bootstrap servers
kafka-up:
	$(VENV)/bin/feedback kafka up --root .kafka

## kafka-down: stop the local Kafka broker (its topics stay for the next kafka-up)
kafka-down:
	$(VENV)/bin/feedback kafka down --root .kafka

## demo: simulate a week of traffic, run the pipeline into demo/lake, print every table, mine and register rewrites, serve one over HTTP on 127.0.0.1
demo:
	$(VENV)/bin/feedback demo --workdir demo

## demo-kafka: the simulated week through Kafka: replay into a fresh topic, the pipeline from the topic, every table (uses the kafka-up broker, else starts and stops its own)
demo-kafka:
	$(VENV)/bin/feedback demo-kafka --workdir demo

## notebooks-html: run the analyst notebooks on NOTEBOOK_LAKE (default demo/lake: run `make demo` first) and render them, plots included, to docs/notebooks/*.html
notebooks-html:
	$(PY) -m feedback.ops.notebooks --lake $(NOTEBOOK_LAKE) --out docs/notebooks

## train-rephrase: fine-tune the BERT rephrase detector on fresh simulations of both corpora, judge it on held-out intents with both behaviour profiles, register it in LAKE/mlflow (25 minutes on a 2-core machine: six simulations and pipeline runs, 3 epochs of about 4 minutes)
train-rephrase:
	$(VENV)/bin/feedback train-rephrase --lake $(LAKE)

## train-failure-points: train the failure-point classifier on a week of 2,000 households of each corpus with every failure point, judge it beside the rules on a week of 2,000 households of held-out intents and slot values (seed 808), register it in LAKE/mlflow (about 12 minutes on 2 cores: four simulations and pipeline runs, then the fit)
train-failure-points:
	$(VENV)/bin/feedback train-failure-points --lake $(LAKE)

## ab: the closed-loop A/B of rewriting on three weeks of 1,000 households of each corpus (seed 1212): rewrites mined on weeks 1-2 of the control arm, both arms judged on week 3 (about 20 minutes)
ab:
	set -e; for corpus in snips sgd; do \
	  $(VENV)/bin/feedback ab --lake bench/ab/$$corpus --users 1000 --seed 1212 --corpus $$corpus --history-days 14 --days 7 --json bench/ab/$$corpus/ab.json; \
	done

## quality-cross: detection quality on SNIPS and SGD traffic under profiles a and b (seed 303), ours beside the naive baseline; MODEL_LAKE=... scores with that lake's champion (about 5 minutes, 10 with the model)
quality-cross:
	$(PY) benchmarks/cross_quality.py --users 500 --days 3 --seed 303 --workdir bench/cross $(if $(MODEL_LAKE),--model-lake $(MODEL_LAKE))

## quality-cross-week: the same on a week of 1,000 households of each, with rewrites mined on days 1-5 and judged on days 6-7 (about 20 minutes with MODEL_LAKE)
quality-cross-week:
	$(PY) benchmarks/cross_quality.py --users 1000 --days 7 --seed 303 --rewrites-split-day 5 --workdir bench/cross7k $(if $(MODEL_LAKE),--model-lake $(MODEL_LAKE))

## quality-labels: goals, failure points and NLU labels from users' corrections on a week of 1,000 households of each corpus (seed 606, every failure point: conf/failure-points.yaml), scored against the simulator's truth (about 15 minutes)
quality-labels:
	set -e; for corpus in snips sgd; do \
	  dir=bench/labels/$$corpus; rm -rf $$dir; \
	  $(VENV)/bin/feedback simulate --out $$dir/traffic --users 1000 --days 7 --seed 606 --corpus $$corpus --conf conf/failure-points.yaml; \
	  $(VENV)/bin/feedback pipeline --events $$dir/traffic/events --lake $$dir/lake; \
	  $(VENV)/bin/feedback evaluate --lake $$dir/lake --truth $$dir/traffic/ground_truth.jsonl --json $$dir/evaluation.json; \
	  $(VENV)/bin/feedback annotate --lake $$dir/lake --truth $$dir/traffic/ground_truth.jsonl --json $$dir/annotations.json; \
	  $(VENV)/bin/feedback export-annotations --lake $$dir/lake --out $$dir/annotations.jsonl; \
	done

## bench-ingest: events/s through bronze ingestion on local[2], with and without Great Expectations
bench-ingest:
	$(PY) benchmarks/bench_ingest.py --users 2700 --days 7 --workdir bench/ingest

clean:
	rm -rf .kafka demo bench spark-warehouse metastore_db derby.log .pytest_cache

## bench-pipeline: events/s through bronze -> silver -> gold on local[2]; state and batch time at three sizes
bench-pipeline:
	$(PY) benchmarks/bench_pipeline.py --users 5000 --days 1 2 4 --workdir bench/pipeline

## bench-rephrase: pairs/s of the detector's Spark stage on a week of 1,000 households, every pair vs behind the cascade (needs `make train-rephrase`)
bench-rephrase:
	$(PY) benchmarks/bench_rephrase.py --model-lake $(LAKE) --users 1000 --days 7 --workdir bench/rephrase

## bench-pipeline-model: one drop of ~500k events through `feedback pipeline` in a cold process, heuristic vs champion detector (needs `make train-rephrase`; about 40 minutes)
bench-pipeline-model:
	$(PY) benchmarks/bench_pipeline.py --model-lake $(LAKE) --users 6400 --days 7 --workdir bench/pipeline-drop

## bench-failure-points: failure-point isolation in the silver batch on a week of 1,000 households with every failure point, rules vs LAKE's failure-point-classifier@champion (needs `make train-failure-points`; about 10 minutes)
bench-failure-points:
	$(PY) benchmarks/bench_failure_points.py --model-lake $(LAKE) --users 1000 --days 7 --workdir bench/failure-points --json bench/failure-points/results.json

## bench-rewrites: rewrite mining (components, sparse absorbing-chain solves, thresholds, MERGE) on synthetic rephrase graphs of 10k, 100k and 1M states on local[2]
bench-rewrites:
	$(PY) benchmarks/bench_rewrites.py --states 10000 100000 1000000 --workdir bench/rewrites --json bench/rewrites/results.json

## bench-kafka: `feedback stream` from a local broker while 2,000 events/s are replayed in event time for 10 minutes (lag, latency), then a 1.2M-message backlog through bronze (about 25 minutes)
bench-kafka:
	$(PY) benchmarks/bench_kafka.py --rate 2000 --minutes 10 --workdir bench/kafka

## cluster-up: a Spark standalone master and two 1-core workers on 127.0.0.1 from the installed pyspark (state in .cluster/)
cluster-up:
	$(PY) -m feedback.ops.cluster up --root $(CLUSTER_DIR) --port $(CLUSTER_PORT) --webui-port $(CLUSTER_WEBUI_PORT) --workers 2 --cores 1 --memory 1g

## cluster-demo: spark-submit jobs/pipeline.py to that cluster over simulated traffic into LAKE (package as a wheel, Delta jars from .cache/jars, the champion detector from LAKE's MLflow registry)
cluster-demo:
	$(PY) -m feedback.ops.cluster wheel --out dist
	test -f $(CLUSTER_DIR)/traffic/manifest.json || $(VENV)/bin/feedback simulate --out $(CLUSTER_DIR)/traffic --users 50 --days 2
	$(PY) -m feedback.ops.cluster submit --root $(CLUSTER_DIR) --py-files dist/feedback-*-py3-none-any.zip \
	  jobs/pipeline.py --events $(CLUSTER_DIR)/traffic/events --lake $(LAKE) --conf conf/cluster.yaml

## cluster-down: stop the workers (and their executors), then the master
cluster-down:
	$(PY) -m feedback.ops.cluster down --root $(CLUSTER_DIR)
