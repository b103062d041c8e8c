# Installed as test/__init__.py of the extracted kafka-python sdist by
# scripts/kafka-python-suite.sh. The sdist ships test/integration but not the package files
# above it that the repository has (test/__init__.py, test/conftest.py, test/service.py,
# test/mock_broker.py). Without this file `import test.testutil` would resolve to the
# standard library's `test` package. It does what the repository's test/__init__.py does
# for the integration tests: default logging, and callbacks that raise fail the test.
import logging

logging.basicConfig(level=logging.INFO)

from kafka.future import Future  # noqa: E402

Future.error_on_callbacks = True
