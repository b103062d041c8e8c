"""Installed as test/service.py of the extracted kafka-python sdist by
scripts/kafka-python-suite.sh (the sdist's test/integration/fixtures.py imports it, but the
sdist does not ship it).

Only an external broker is supported: the suite always sets KAFKA_URI, so the fixtures
wrap the broker in ExternalService and never spawn ZooKeeper or Kafka. SpawnedService
exists for the import and refuses to run.
"""
import logging

__all__ = ['ExternalService', 'SpawnedService']

log = logging.getLogger(__name__)


class ExternalService:
    """A broker that is already running at host:port (here: Conflux)."""

    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def open(self):
        pass

    def close(self):
        pass

    def stop(self):
        pass

    def dump_logs(self):
        pass


class SpawnedService:
    """Would start a Kafka/ZooKeeper process from a Kafka distribution; not available here."""

    def __init__(self, args=None, env=None):
        raise RuntimeError(
            "kafka-python-suite runs against an external broker only (KAFKA_URI); "
            "a test tried to spawn a broker process: %r" % (args,))
