"""The ``feedback`` command line: parse arguments, build Spark, call a ``run`` function.

Nothing else happens here; ``jobs/*.py`` call the same functions for spark-submit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from feedback.config import INGEST_SOURCES, AppConfig, load_config
from feedback.ops.kafka import add_commands as add_kafka_commands
from feedback.ops.kafka import run_command as run_kafka_command

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from feedback.core.lake import LakePaths


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "great_expectations", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_conf(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", type=Path, default=None, help="YAML file applied over the defaults (conf/default.yaml)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedback", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write simulated contract-v1 traffic and its ground truth")
    simulate.add_argument("--out", type=Path, required=True, help="output directory (events/, ground_truth.jsonl, ...)")
    simulate.add_argument("--users", type=int, default=None)
    simulate.add_argument("--days", type=int, default=None)
    simulate.add_argument("--seed", type=int, default=None)
    simulate.add_argument(
        "--vocabulary",
        choices=("all", "train", "heldout"),
        default=None,
        help="all intents and slot values, or the training / held-out part (simulation.heldout_*)",
    )
    simulate.add_argument("--corpus", choices=("snips", "sgd"), default=None, help="the corpus requests are composed from (simulation.corpus)")
    simulate.add_argument(
        "--rewriter",
        default=None,
        help="a query-rewriter model URI: the treatment arm, every request goes through it before the NLU (simulation.rewriter)",
    )
    simulate.add_argument(
        "--rewrite-from-day", dest="rewrite_from_day", type=int, default=None, help="the day the rewriter is on from (simulation.rewrite_from_day)"
    )
    simulate.add_argument("--lake", type=Path, default=None, help="the lake whose MLflow registry resolves a models:/ --rewriter URI")
    _add_conf(simulate)

    ab = commands.add_parser(
        "ab", help="closed-loop A/B: the same simulated world with and without a rewriter; defect rates, fixed and broken requests"
    )
    ab.add_argument("--lake", type=Path, required=True, help="lake with the MLflow registry (the mined history goes under LAKE/_training)")
    ab.add_argument("--rewriter", default=None, help="model URI of the treatment; default: mine one from the arms' shared history")
    ab.add_argument("--days", dest="judged_days", type=int, default=7, help="days judged, after the history")
    ab.add_argument("--history-days", dest="history_days", type=int, default=14, help="days both arms share before the rewriter is on")
    ab.add_argument("--users", type=int, default=None)
    ab.add_argument("--seed", type=int, default=None)
    ab.add_argument("--corpus", choices=("snips", "sgd"), default=None)
    ab.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    _add_conf(ab)

    for name, text in (
        ("pipeline", "process every event now in the source (--events, or the Kafka topic) through every stage, then exit"),
        ("stream", "keep processing events as they arrive (files in --events, or the Kafka topic) until interrupted"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--events", type=Path, default=None, help="landing directory of *.jsonl files (source files)")
        command.add_argument("--lake", type=Path, required=True, help="root directory of the Delta lake")
        command.add_argument(
            "--source", choices=INGEST_SOURCES, default=None, help="files (--events) or kafka (ingest.kafka.*); overrides ingest.source"
        )
        _add_conf(command)

    backfill = commands.add_parser("backfill", help="recompute silver and gold for whole days from bronze")
    backfill.add_argument("--lake", type=Path, required=True)
    days = backfill.add_mutually_exclusive_group(required=True)
    days.add_argument("--late", action="store_true", help="exactly the event dates with events the stream dropped as late")
    days.add_argument("--from", dest="first_day", type=_date, help="first event date, YYYY-MM-DD (with --to)")
    backfill.add_argument("--to", dest="last_day", type=_date, default=None, help="last event date, YYYY-MM-DD")
    _add_conf(backfill)

    evaluate = commands.add_parser("evaluate", help="score silver/turns against a simulator ground-truth file")
    evaluate.add_argument("--lake", type=Path, required=True)
    evaluate.add_argument("--truth", type=Path, required=True, help="ground_truth.jsonl written by `feedback simulate`")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    _add_conf(evaluate)

    train = commands.add_parser("train-rephrase", help="fine-tune, evaluate and register the BERT rephrase detector")
    train.add_argument("--lake", type=Path, required=True, help="lake whose MLflow store (LAKE/mlflow) gets the model")
    train.add_argument("--events", type=Path, default=None, help="train on this landing directory (default: a fresh simulation)")
    train.add_argument("--truth", type=Path, default=None, help="ground_truth.jsonl of --events")
    _add_conf(train)

    failure = commands.add_parser(
        "train-failure-points", help="train, evaluate on held-out intents and values, and register the failure-point classifier"
    )
    failure.add_argument("--lake", type=Path, required=True, help="lake whose MLflow store (LAKE/mlflow) gets the model")
    _add_conf(failure)

    mine = commands.add_parser("mine-rewrites", help="mine gold/rewrites from silver rephrase chains, register the query rewriter")
    mine.add_argument("--lake", type=Path, required=True)
    mine.add_argument("--truth", type=Path, default=None, help="ground truth for the champion rule (default: implicit, from silver)")
    mine.add_argument("--no-register", action="store_true", help="only write gold/rewrites (overrides mining.register)")
    _add_conf(mine)

    annotate = commands.add_parser("annotate", help="rebuild gold/nlu_annotations: NLU labels for failed wordings from the rephrases that fixed them")
    annotate.add_argument("--lake", type=Path, required=True)
    annotate.add_argument("--truth", type=Path, default=None, help="also score the rows against this simulator ground truth")
    annotate.add_argument("--json", type=Path, default=None, help="also write the summary and scores to this JSON file")
    _add_conf(annotate)

    export = commands.add_parser("export-annotations", help="write gold/nlu_annotations as NLU training examples")
    export.add_argument("--lake", type=Path, required=True)
    export.add_argument("--format", dest="export_format", choices=("jsonl",), default="jsonl", help="one JSON object per line")
    export.add_argument("--out", type=Path, default=None, help="file to write (default: standard output)")
    _add_conf(export)

    rewrites = commands.add_parser("evaluate-rewrites", help="offline win/loss of gold/rewrites on a simulator ground truth")
    rewrites.add_argument("--lake", type=Path, required=True)
    rewrites.add_argument("--truth", type=Path, required=True, help="ground_truth.jsonl written by `feedback simulate`")
    rewrites.add_argument("--model", default=None, help="evaluate this model URI instead, e.g. models:/query-rewriter@champion")
    rewrites.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    _add_conf(rewrites)

    replay = commands.add_parser("replay", help="publish landing files to a Kafka topic at a steady rate (demos, tests, soak runs)")
    replay.add_argument("--to-kafka", action="store_true", required=True, help="publish to Kafka (the only target)")
    replay.add_argument("--events", type=Path, required=True, help="landing directory, e.g. the events/ of `feedback simulate`")
    replay.add_argument("--topic", default=None, help="topic (default: ingest.kafka.topic)")
    replay.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as the broker takes them)")
    replay.add_argument("--bootstrap-servers", default=None, help="default: ingest.kafka.bootstrap_servers")
    replay.add_argument(
        "--in-event-time", action="store_true", help="send each event when its ts falls due, its ts shifted to now (gaps and late events kept)"
    )
    _add_conf(replay)

    veto = commands.add_parser("veto-rewrite", help="rule out a rewrite (or every rewrite of a source) for later mining runs")
    veto.add_argument("--lake", type=Path, required=True)
    veto.add_argument("--source", required=True, help="the source utterance (normalized like silver)")
    veto.add_argument("--rewrite", default=None, help="the vetoed rewrite; omit to veto every rewrite of --source")
    veto.add_argument("--reason", default=None)
    _add_conf(veto)

    maintain = commands.add_parser("maintain", help="OPTIMIZE and VACUUM every table of the lake (conf: maintenance)")
    maintain.add_argument("--lake", type=Path, required=True)
    _add_conf(maintain)

    demo_kafka = commands.add_parser(
        "demo-kafka", help="the demo week through Kafka: a local broker, replay, the pipeline from the topic, every table"
    )
    demo_kafka.add_argument("--workdir", type=Path, default=Path("demo"), help="where the traffic and the lake (kafka-lake/) go")
    demo_kafka.add_argument(
        "--broker-root", type=Path, default=Path(".kafka"), help="the broker's folder: one running there is used, else one is started and stopped"
    )
    _add_conf(demo_kafka)

    kafka = commands.add_parser("kafka", help="start or stop a local single-node Kafka broker (KRaft), for demos, tests and benchmarks")
    add_kafka_commands(kafka)

    demo = commands.add_parser("demo", help="simulate a week of traffic, run the pipeline, mine and register rewrites, serve one over HTTP")
    demo.add_argument("--workdir", type=Path, default=Path("demo"), help="where the traffic and the lake go")
    _add_conf(demo)
    return parser


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from error


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The configuration the flags set: simulation size and seed, the bronze source."""
    overrides: dict[str, object] = {}
    keys = ("users", "days", "seed", "vocabulary", "corpus", "rewriter", "rewrite_from_day")
    section = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    if section:
        overrides["simulation"] = section
    if getattr(args, "source", None) is not None:
        overrides["ingest"] = {"source": args.source}
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "backfill" and (args.first_day is None) != (args.last_day is None):
        parser.error("backfill: --from and --to go together (or use --late)")
    if args.command == "kafka":
        print(run_kafka_command(args))
        return 0
    _configure_logging(args.verbose)
    config: AppConfig = load_config(args.conf, _overrides(args))
    if args.command in ("pipeline", "stream") and (config.ingest.source == "kafka") == (args.events is not None):
        parser.error(f"{args.command}: give --events with ingest.source files, and leave it out with kafka")

    if args.command == "replay":
        from feedback.ops.replay import replay

        kafka = config.ingest.kafka
        report = replay(
            args.events, args.bootstrap_servers or kafka.bootstrap_servers, args.topic or kafka.topic, args.rate, in_event_time=args.in_event_time
        )
        print(report.render())
        return 0

    if args.command == "simulate":
        from feedback.simulate import run as simulate

        rewriter = None
        if config.simulation.rewriter is not None:
            from feedback.core.lake import LakePaths
            from feedback.core.registry import configure_mlflow
            from feedback.rewrites.closed_loop import load_rewriter

            if args.lake is not None:
                configure_mlflow(LakePaths.at(args.lake))
            rewriter = load_rewriter(config.simulation.rewriter)
        summary = simulate(config.simulation, args.out, rewriter=rewriter)
        print(summary)
        return 0

    from feedback.core.lake import LakePaths
    from feedback.core.spark import build_spark

    spark = build_spark(config.spark)
    try:
        if args.command == "demo":
            from feedback.ops.demo import run as run_demo

            print(run_demo(spark, config, args.workdir, LakePaths.at(args.workdir / "lake")))
        elif args.command == "demo-kafka":
            from feedback.ops.demo import run_kafka

            print(run_kafka(spark, config, args.workdir, LakePaths.at(args.workdir / "kafka-lake"), args.broker_root))
        else:
            # The one place a --lake path becomes a lake: everything below takes LakePaths.
            _run_on_lake(spark, config, args, LakePaths.at(args.lake))
    finally:
        spark.stop()
    return 0


def _run_on_lake(spark: SparkSession, config: AppConfig, args: argparse.Namespace, lake: LakePaths) -> None:
    """Run the ``--lake`` command of ``args`` on ``lake``."""
    if args.command == "pipeline":
        from feedback.pipeline import run_pipeline

        print(run_pipeline(spark, config, args.events, lake).render())
    elif args.command == "stream":
        from feedback.pipeline import run_stream

        print(run_stream(spark, config, args.events, lake).render())
    elif args.command == "backfill" and args.late:
        from feedback.pipeline import backfill_late_events

        print(backfill_late_events(spark, config, lake).render())
    elif args.command == "backfill":
        from feedback.pipeline import backfill_days

        turns = backfill_days(spark, config, lake, args.first_day, args.last_day)
        print(f"backfill {args.first_day}..{args.last_day}: {turns} turns rewritten in silver/turns; gold rebuilt")
    elif args.command == "ab":
        from feedback.ops.ab import run as run_ab

        print(run_ab(spark, config, lake, args.rewriter, args.history_days, args.judged_days, args.json).render())
    elif args.command == "evaluate":
        from feedback.silver.evaluate import run as evaluate

        print(evaluate(spark, lake, args.truth, args.json).render())
    elif args.command == "train-rephrase":
        from feedback.rephrase.train import run as train_rephrase

        print(train_rephrase(spark, config, lake, args.events, args.truth).render())
    elif args.command == "train-failure-points":
        from feedback.isolation.train import run as train_failure_points

        print(train_failure_points(spark, config, lake).render())
    elif args.command == "mine-rewrites":
        from feedback.rewrites.mine import run as mine_rewrites

        register = False if args.no_register else None
        print(mine_rewrites(spark, config, lake, args.truth, register=register).render())
    elif args.command == "annotate":
        from feedback.gold.annotations import run as annotate

        print(annotate(spark, config, lake, args.truth, args.json).render())
    elif args.command == "export-annotations":
        from feedback.gold.annotations import export

        if args.out is None:
            count = export(spark, lake, sys.stdout, args.export_format)
        else:
            with args.out.open("w", encoding="utf-8") as out:
                count = export(spark, lake, out, args.export_format)
        print(f"exported {count} annotations" + (f" to {args.out}" if args.out else ""), file=sys.stderr)
    elif args.command == "evaluate-rewrites":
        from feedback.rewrites.evaluate import run as evaluate_rewrites

        print(evaluate_rewrites(spark, lake, args.truth, args.json, args.model).render())
    elif args.command == "veto-rewrite":
        from feedback.rewrites.mine import add_veto

        add_veto(spark, lake, args.source, args.rewrite, args.reason)
        print(f"vetoed {args.rewrite or 'every rewrite'!r} for {args.source!r}; the next mine-rewrites respects it")
    elif args.command == "maintain":
        from feedback.ops.maintain import run as maintain

        print(maintain(spark, config, lake).render())
    else:
        raise ValueError(f"command: unknown {args.command!r}")


if __name__ == "__main__":
    raise SystemExit(main())
