"""What the side-by-side benchmark scripts share: process and /proc readings, free ports, the
binary copy, stopping on signals, and the median/range/ratio table they all print.

Imported by bench/mqtt_compare.py, bench/amqp_compare.py, bench/kafka_bench.py and
bench/many_streams.py (run as scripts, so this folder is on sys.path)."""

import hashlib
import os
import resource
import shutil
import signal
import socket
import statistics

CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_nofile():
    """preexec_fn / self: as many file descriptors as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, 1 << 20)), hard))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid, key):
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM), NaN if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return float("nan")


def cpu_secs(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return float("nan")


def dir_bytes(path):
    """Bytes of disk the files below `path` take (allocated blocks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def copy_binary(src, dst):
    """Copies a binary (a rebuild during the run then changes nothing); returns its sha256 prefix."""
    if os.path.abspath(src) != os.path.abspath(dst):
        shutil.copy2(src, dst)
    with open(dst, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def stop_on_signals():
    """SIGINT/SIGTERM/SIGHUP raise SystemExit, so the callers' `finally` stops their brokers."""
    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}: stopping brokers")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)


def size_label(size):
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def fmt(v):
    if v != v:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(r):
    if r != r:
        return "–"
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def values(results, scen, field):
    """A figure of every round (`scen` None: a top-level figure of the round), numbers only."""
    if scen is None:
        vals = [res[field] for res in results if field in res]
    else:
        vals = [res[scen][field] for res in results if scen in res and isinstance(res[scen], dict) and field in res[scen]]
    return [v for v in vals if isinstance(v, (int, float)) and v == v]


def med(results, scen, field):
    v = values(results, scen, field)
    return statistics.median(v) if v else float("nan")


def cell(results, scen, field, once=("depth",)):
    """`median (min–max)` over the rounds; `n/a` where the broker has no such scenario; a note
    where runs are missing (not for the `once` scenarios, run once per broker) or lost messages."""
    v = values(results, scen, field)
    if not v and results and all(res.get(scen, {}).get("na") for res in results):
        return "n/a"
    if not v:
        return "error" if any("error" in res.get(scen, {}) for res in results) else "–"
    s = f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})" if len(v) > 1 else fmt(v[0])
    if len(v) < len(results) and scen not in once:
        s += f" [{len(v)} of {len(results)} runs]"
    drops = sum(1 for res in results if res.get(scen, {}).get("dropped", 0) > 0)
    if drops and field in ("msgs_per_sec", "deliveries_per_sec"):
        s += f" ⚠ drops in {drops} run(s)"
    return s


def render(rows, brokers, results):
    """The results table of two brokers (Conflux first): one line per (scenario, field, label,
    unit, ↑/↓) row, with the ratio of the medians."""
    c, m = brokers
    lines = [f"| scenario | unit | {c.name}: median (range) | {m.name}: median (range) | {c.name} / {m.name} |",
             "|---|---|---:|---:|---:|"]
    for scen, field, label, unit, better in rows:
        mc, mm = med(results[c.key], scen, field), med(results[m.key], scen, field)
        r = mc / mm if mm and mm == mm and mc == mc else float("nan")
        lines.append(f"| {label} | {unit} {better} | {cell(results[c.key], scen, field)} | "
                     f"{cell(results[m.key], scen, field)} | {ratio(r)} |")
    lines.append("")
    lines.append("↑ higher is better, ↓ lower is better: a ratio above 1 puts Conflux ahead on ↑ rows and behind on ↓ rows.")
    return "\n".join(lines)
