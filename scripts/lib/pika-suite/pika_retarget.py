#!/usr/bin/env python3
"""Point a copy of pika's acceptance tests at HOST:PORT (used by scripts/pika-suite.sh;
the same as shared/peers/lib/pika_retarget.py).

    pika_retarget.py TESTS_DIR HOST PORT

pika's acceptance tests have no config file or environment variable for the broker: the
address is written into the test modules (blocking_adapter_test.py's URL template
'amqp://guest:guest@127.0.0.1:%(port)s/...' filled with port 5672, tests/base/
async_test_base.py's ConnectionParameters(host='127.0.0.1', port=5672), and in later
versions thread_safe_*_test.py). This rewrites, in tests/acceptance and tests/base only:
  - every host='127.0.0.1'/'localhost' keyword that is followed by port=5672 (the broker),
    and the host in that URL template, to HOST;
  - every integer literal 5672 to PORT.
A host keyword next to any other port is left alone: thread_safe_connection_test.py
connects to a ForwardServer that the test itself binds on 127.0.0.1, and that address
must not move. Sockets the tests bind themselves stay on 127.0.0.1, so HOST should be a
loopback address. Prints what it changed; exits 1 if nothing matched.
"""
import pathlib
import re
import sys

tests, host, port = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
url_host = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets in a URL
changed = 0
for sub in ("acceptance", "base"):
    for f in sorted((tests / sub).glob("*.py")):
        text = f.read_text(encoding="utf-8")
        new, n1 = re.subn(r"host=(['\"])(?:127\.0\.0\.1|localhost)\1(\s*,\s*port=5672)(?![\w.])",
                          lambda m: f"host='{host}'{m.group(2)}", text)
        new, n2 = re.subn(r"(amqp://[^@'\"]*@)(?:127\.0\.0\.1|localhost)(:%\(port\)s)",
                          lambda m: f"{m.group(1)}{url_host}{m.group(2)}", new)
        new, n3 = re.subn(r"(?<![\w.])5672(?![\w.])", str(port), new)
        if n1 + n2 + n3:
            f.write_text(new, encoding="utf-8")
            print(f"{f.relative_to(tests)}: {n3} port literal(s), {n1 + n2} broker host(s)")
            changed += n1 + n2 + n3
sys.exit(0 if changed else 1)
