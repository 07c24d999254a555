"""A single-node Apache Kafka (KRaft, combined broker + controller) run as a local Java process.

The broker's jars come from Maven Central through `kafka-pom.xml`: `resolve_jars` asks Maven once
and keeps the jars in the cache directory (outside the work tree), so later runs download nothing.
Storage is formatted once; the broker then keeps its data in `<data>/kafka` across restarts. The
configuration is sized for a 2-core machine: few network/IO threads, small internal topics, no
initial rebalance delay.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient

from backbone.errors import ConfigurationError, ServiceUnavailableError
from backbone.runtime.processes import ServiceProcess, require_free_port
from backbone.settings import KafkaSettings, RuntimeSettings

_HERE = Path(__file__).parent
POM = _HERE / "kafka-pom.xml"
LOG4J = _HERE / "kafka-log4j2.properties"
MAIN_CLASS = "kafka.Kafka"


def jar_dir(runtime: RuntimeSettings, kafka: KafkaSettings) -> Path:
    return runtime.cache_dir.expanduser().resolve() / f"kafka-{kafka.version}" / "libs"


def resolve_jars(runtime: RuntimeSettings, kafka: KafkaSettings) -> tuple[Path, bool]:
    """The directory holding the broker's jars, and whether Maven had to be asked for them."""
    target = jar_dir(runtime, kafka)
    if any(target.glob("kafka_2.13-*.jar")):
        return target, False
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigurationError(
            "Maven (mvn) is needed once to download the Kafka broker jars",
            hint="install it (apt-get install -y maven) or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS to an existing cluster",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={kafka.version}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise ServiceUnavailableError(
                f"Maven could not resolve Apache Kafka {kafka.version}:\n{tail}",
                hint="check that Maven Central is reachable (or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS)",
            )
        Path(staging).rename(target)  # atomic: a half-finished download never looks complete
    return target, True


def server_properties(home: Path, kafka: KafkaSettings) -> str:
    """The broker's configuration for a single local node."""
    host = "127.0.0.1"
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{kafka.controller_port}",
        "listeners": f"PLAINTEXT://{host}:{kafka.port},CONTROLLER://{host}:{kafka.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{kafka.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(home / "data"),
        # Sized for a 2-core machine.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "2",
        "log.cleaner.threads": "1",
        "num.recovery.threads.per.data.dir": "1",
        "num.partitions": "1",
        "offsets.topic.num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.num.partitions": "6",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests and local runs start consumer groups constantly; waiting 3 s for each is waste.
        "group.initial.rebalance.delay.ms": "0",
        # Every topic is created on purpose (the catalog by `backbone up`, tools and tests by the admin
        # client). An auto-created topic gets `num.partitions` (1): a stray metadata request for a catalog
        # topic would then break its six-partition co-partitioning for good (seen in CI).
        "auto.create.topics.enable": "false",
        "log.segment.bytes": str(128 * 1024 * 1024),
        "message.max.bytes": str(8 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class LocalKafka:
    """The broker process and its storage under `<data>/kafka`."""

    def __init__(self, runtime: RuntimeSettings, kafka: KafkaSettings) -> None:
        self.runtime = runtime
        self.kafka = kafka
        self.home = runtime.data_dir.resolve() / "kafka"
        self.process = ServiceProcess("kafka", self.home, marker=f"{self.home}/server.properties")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    def start(self) -> bool:
        """Start the broker unless it runs; True when it was started now. Returns once it answers."""
        if self.process.pid() is not None:
            self.wait_ready(timeout=60)
            return False
        require_free_port(self.kafka.port, "Kafka", "BACKBONE_KAFKA_PORT")
        require_free_port(self.kafka.controller_port, "the Kafka controller", "BACKBONE_KAFKA_CONTROLLER_PORT")
        java = _require_java()
        jars, _ = resolve_jars(self.runtime, self.kafka)
        config = self.home / "server.properties"
        self.home.mkdir(parents=True, exist_ok=True)
        config.write_text(server_properties(self.home, self.kafka))
        classpath = f"{jars}/*"
        self._format_once(java, classpath, config)
        self.process.start(
            [
                java,
                f"-Xms{self.kafka.heap}",
                f"-Xmx{self.kafka.heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={LOG4J}",
                "-cp",
                classpath,
                MAIN_CLASS,
                str(config),
            ],
            cwd=self.home,
        )
        self.wait_ready(timeout=90)
        return True

    def _format_once(self, java: str, classpath: str, config: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = _cluster_id(self.home)
        result = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={LOG4J}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(config),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceUnavailableError(
                f"formatting Kafka storage in {self.home / 'data'} failed:\n{result.stdout}{result.stderr}",
                hint=f"remove {self.home} to start from empty storage (this deletes the local topics)",
            )

    def wait_ready(self, *, timeout: float) -> None:
        """Block until the broker answers a metadata request; on failure say why and what to do."""
        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})  # refusals are expected here
        while time.monotonic() < deadline:
            if self.process.pid() is None:
                raise ServiceUnavailableError(
                    f"the Kafka broker exited during start; last lines of {self.process.log_file}:\n"
                    f"{self.process.log_tail()}",
                    hint=f"is port {self.kafka.port} or {self.kafka.controller_port} taken? "
                    "Set BACKBONE_KAFKA_PORT / BACKBONE_KAFKA_CONTROLLER_PORT or stop the other process",
                )
            if broker_answers(admin):
                return
        raise ServiceUnavailableError(
            f"the Kafka broker did not answer within {timeout:.0f}s; last lines of {self.process.log_file}:\n"
            f"{self.process.log_tail()}",
            hint="run `backbone down` and `backbone up` again; check free memory and disk",
        )

    def stop(self) -> bool:
        return self.process.stop(timeout=60)


def broker_answers(admin: AdminClient, timeout: float = 1.0) -> bool:
    """True when the cluster answers a metadata request with at least one broker."""
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # any client error here just means "not ready yet"
        return False


def _cluster_id(home: Path) -> str:
    """A cluster id kept beside the data, so a re-format after a lost data dir keeps the same id.

    (It is base64 and may start with '-', hence `--cluster-id=...` in one argument above.)
    """
    path = home / "cluster.id"
    if not path.exists():
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    return path.read_text().strip()


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ConfigurationError(
            "Java (17 or newer) is needed to run the local Kafka broker",
            hint="install it (apt-get install -y openjdk-17-jre-headless) or set BACKBONE_KAFKA_BOOTSTRAP_SERVERS",
        )
    return java
