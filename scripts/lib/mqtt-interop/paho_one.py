#!/usr/bin/env python3
"""Run one paho.mqtt.testing interoperability client test against any host/port.

(Used by scripts/mqtt-interop-suite.sh; taken from the peers harness, lib/paho_one.py.)

    paho_one.py INTEROP_DIR MODULE --list
    paho_one.py INTEROP_DIR MODULE HOST PORT TEST

MODULE is client_test (MQTT 3.1.1) or client_test5 (MQTT 5.0). Env PAHO_LOG_LEVEL (default
ERROR, the suite's own): DEBUG logs every packet the suite's client sends and receives.

The suite's own __main__ sets its module globals (host, port, topic lists) from getopt and then hands sys.argv to
unittest, which chokes on -h/-p; so this imports the module, sets the same globals the
__main__ block would, and runs exactly one Test.<name>. Exit: 0 pass, 1 fail, 3 skip.
"""
import importlib
import logging
import os
import sys
import unittest


def load(interop_dir, module):
    sys.path.insert(0, interop_dir)
    return importlib.import_module(module)


def main():
    interop_dir, module = sys.argv[1], sys.argv[2]
    mod = load(interop_dir, module)
    if sys.argv[3] == "--list":
        for name in unittest.TestLoader().getTestCaseNames(mod.Test):
            print(name)
        return 0
    host, port, test = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    # the values that the suite's __main__ block assigns
    mod.host, mod.port = host, port
    mod.nosubscribe_topics = ("test/nosubscribe",)
    if module == "client_test5":
        # (its Test.setUpClass then calls setData(), which puts the unprefixed topic
        # lists back, exactly as in a run of the suite's own __main__; only
        # topic_prefix itself stays in use, by test_shared_subscriptions)
        mod.topic_prefix = "client_test5/"
        mod.topics = [mod.topic_prefix + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
        mod.wildtopics = [mod.topic_prefix + t for t in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
    else:
        mod.topics = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
        mod.wildtopics = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
    # the suite's own level is ERROR; PAHO_LOG_LEVEL=DEBUG shows every packet in and out
    level = os.environ.get("PAHO_LOG_LEVEL", "ERROR").upper()
    if level != "ERROR":
        logging.basicConfig(format="%(asctime)s.%(msecs)03d %(threadName)s %(message)s", datefmt="%H:%M:%S")
        # the suite has logging calls with wrong arguments (cleanRetained); without this
        # each prints a "--- Logging error ---" traceback that paho_reason.py would report
        logging.raiseExceptions = False
    logging.getLogger().setLevel(getattr(logging, level, logging.ERROR))
    suite = unittest.TestLoader().loadTestsFromName("Test." + test, mod)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    if result.errors or result.failures:
        return 1
    if result.skipped and not result.testsRun - len(result.skipped):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
