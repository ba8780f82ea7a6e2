"""A single-node Apache Kafka broker (KRaft) on this machine: for the Kafka source's tests, demos and benchmarks.

No Docker: the broker runs from the pinned Maven Central jars that ``make setup`` caches
(``feedback.core.jars``), in its own JVM and process group. Everything it keeps lives under one
folder (``.kafka/`` by default): ``server.properties``, the log directory, ``broker.log`` and
``broker.json`` (pid and ports), so ``down`` finds what ``up`` started and a broker restarted on
the same folder keeps its topics and offsets.

    python -m feedback.ops.kafka up [--root .kafka] [--port 0] [--controller-port 0]
    python -m feedback.ops.kafka down [--root .kafka]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from feedback.core.jars import broker_jar_paths
from feedback.ops.processes import free_port, process_alive

STATE_FILE = "broker.json"
PROPERTIES_FILE = "server.properties"
LOG_FILE = "broker.log"
DATA_DIR = "data"
STARTED_LINE = "Kafka Server started"


@dataclass(frozen=True)
class Broker:
    """A running broker: where it keeps its files, its ports and its process."""

    root: str
    port: int
    controller_port: int
    pid: int

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """The KRaft configuration of a one-node cluster on 127.0.0.1 (broker and controller in one process).

    Every replication factor and minimum ISR is 1: with one node, Kafka's defaults of 3 would
    leave the internal topics (consumer offsets, transactions, share groups) unable to be created.
    """
    for name, value in (("port", port), ("controller_port", controller_port)):
        if not 0 < value < 65536:
            raise ValueError(f"{name} must be in 1..65535, got {value}")
    if port == controller_port:
        raise ValueError(f"port and controller_port must differ, both are {port}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "2",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(2 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def accepts_connections(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise FileNotFoundError("java not found: set JAVA_HOME or put java on PATH (Java 17)")
    return java


def _class_path() -> str:
    return os.pathsep.join(str(path) for path in broker_jar_paths())


def running_broker(root: Path) -> Broker | None:
    """The broker ``broker.json`` under ``root`` names, if its process is alive."""
    state = root / STATE_FILE
    if not state.is_file():
        return None
    broker = Broker(**json.loads(state.read_text(encoding="utf-8")))
    return broker if process_alive(broker.pid) else None


def _format_storage(root: Path, properties: Path) -> None:
    """Give the log directory a cluster id once (a restart keeps the formatted directory)."""
    if (root / DATA_DIR / "meta.properties").is_file():
        return
    java, class_path = _java(), _class_path()
    cluster_id = subprocess.run(
        [java, "-cp", class_path, "kafka.tools.StorageTool", "random-uuid"], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(
        [java, "-cp", class_path, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)],
        check=True,
        capture_output=True,
        text=True,
    )


def start_broker(
    root: Path, port: int = 0, controller_port: int = 0, timeout_s: float = 90.0, heap: str = "256m"
) -> Broker:
    """Start the broker under ``root`` and wait until it serves clients (a registered broker); a running one is returned as is.

    Ports 0 pick free ones on a new folder; a folder that held a broker before keeps its ports
    (its ``server.properties``), so clients and checkpoints still find it after a restart.

    Raises:
        TimeoutError: the broker did not start within ``timeout_s`` (the tail of ``broker.log`` says why).
        RuntimeError: the broker process exited while starting.
    """
    root = root.resolve()
    running = running_broker(root)
    if running is not None:
        return running
    root.mkdir(parents=True, exist_ok=True)
    properties = root / PROPERTIES_FILE
    if properties.is_file() and not (port or controller_port):
        port, controller_port = _ports_of(properties)
    else:
        port = port or free_port()
        controller_port = controller_port or free_port()
        properties.write_text(server_properties(root / DATA_DIR, port, controller_port), encoding="utf-8")
    _format_storage(root, properties)
    log = (root / LOG_FILE).open("ab")
    process = subprocess.Popen(
        [_java(), f"-Xmx{heap}", "-cp", _class_path(), "kafka.Kafka", str(properties)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    broker = Broker(str(root), port, controller_port, process.pid)
    (root / STATE_FILE).write_text(json.dumps(asdict(broker)), encoding="utf-8")
    deadline = time.monotonic() + timeout_s
    while not (accepts_connections(port) and serves_metadata(broker.bootstrap_servers)):
        if process.poll() is not None:
            raise RuntimeError(f"the Kafka broker exited with {process.returncode} while starting: {_log_tail(root)}")
        if time.monotonic() > deadline:
            stop_broker(root)
            raise TimeoutError(f"the Kafka broker did not serve clients on {port} within {timeout_s:.0f}s: {_log_tail(root)}")
        time.sleep(0.2)
    return broker


def serves_metadata(bootstrap_servers: str, timeout_s: float = 5.0) -> bool:
    """Whether the broker answers a cluster description that lists a registered broker.

    The port opens before the broker has registered with its controller; a producer that writes
    then can wait out its whole delivery timeout on a topic with no leader.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    except KafkaConfigurationError:
        raise
    except (KafkaError, OSError):
        return False
    try:
        brokers = admin.describe_cluster().get("brokers") or []
        return any(not broker.get("is_fenced", False) for broker in brokers)
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _ports_of(properties: Path) -> tuple[int, int]:
    values = dict(line.split("=", 1) for line in properties.read_text(encoding="utf-8").splitlines() if "=" in line)
    port = int(values["advertised.listeners"].rsplit(":", 1)[1])
    controller_port = int(values["controller.quorum.voters"].rsplit(":", 1)[1])
    return port, controller_port


def _log_tail(root: Path, lines: int = 20) -> str:
    path = root / LOG_FILE
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def stop_broker(root: Path, timeout_s: float = 30.0, kill: bool = False) -> bool:
    """Stop the broker under ``root`` (SIGTERM, then SIGKILL after ``timeout_s``; ``kill``: SIGKILL at once).

    Returns whether a broker was running. Its files stay, so ``start_broker`` on ``root`` resumes it.
    """
    root = root.resolve()
    broker = running_broker(root)
    if broker is not None:
        os.killpg(broker.pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while process_alive(broker.pid) and time.monotonic() < deadline:
            _reap(broker.pid)
            time.sleep(0.2)
        if process_alive(broker.pid):
            os.killpg(broker.pid, signal.SIGKILL)
            while process_alive(broker.pid):
                _reap(broker.pid)
                time.sleep(0.1)
    (root / STATE_FILE).unlink(missing_ok=True)
    return broker is not None


def _reap(pid: int) -> None:
    """Collect the exit status of a broker this process started (else it stays a zombie that looks alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int = 2) -> bool:
    """Create ``topic`` unless it exists (whether it was created). A stream subscribed to a topic
    that does not exist yet fails with ``UnknownTopicOrPartitionException``: create it first."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


def add_commands(parser: argparse.ArgumentParser) -> None:
    """The ``up`` and ``down`` commands, shared by ``feedback kafka`` and ``python -m feedback.ops.kafka``."""
    commands = parser.add_subparsers(dest="kafka_command", required=True)
    up = commands.add_parser("up", help="start the broker and wait until it serves clients")
    up.add_argument("--root", type=Path, default=Path(".kafka"))
    up.add_argument("--port", type=int, default=0, help="PLAINTEXT port (0: a free one)")
    up.add_argument("--controller-port", type=int, default=0, help="KRaft controller port (0: a free one)")
    down = commands.add_parser("down", help="stop the broker (its topics stay for the next up)")
    down.add_argument("--root", type=Path, default=Path(".kafka"))


def run_command(args: argparse.Namespace) -> str:
    """Carry out a parsed ``up`` or ``down``; what happened, in one line."""
    if args.kafka_command == "up":
        broker = start_broker(args.root, args.port, args.controller_port)
        return f"kafka broker up: bootstrap servers {broker.bootstrap_servers} (pid {broker.pid}, files in {broker.root})"
    return "kafka broker stopped" if stop_broker(args.root) else "no kafka broker was running"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedback.ops.kafka", description=__doc__.split("\n\n")[0])
    add_commands(parser)
    print(run_command(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
