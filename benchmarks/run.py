"""Orchestrator: `python -m benchmarks.run` (`make bench`) plays N calls through a fresh service per run.

For each scenario (calls x tracks x start x duration), round and variant: start the Deepgram stand-in, start
the server (callscribe's `python -m service serve --workers 1`, the floor, the inbound floor or the peer) pointed at it,
measure its start-up (time and CPU until /healthz answers) and idle memory, run the load generator while
sampling the server's process tree from /proc, stop everything, then join the records
(benchmarks/analysis.py). Variants (callscribe from this checkout, from a `--baseline` checkout, the same
checkout on Deepgram Flux unless `--no-flux`, the inbound floor, the peer) take their turns inside each round, so a
machine that drifts over minutes drifts for all of them alike. With `--inbound-floor`, every other variant's CPU
(callscribe's, the floor's, the peer's) is also divided by the inbound floor's of the same round
(`cpu_to_inbound_floor`: per round, and the median).

By default nothing is pinned: the load generator, the stand-in and the server share the machine's cores, as
on a laptop or a small dyno. `--pin` puts the server's tree on CPU 0 and the harness on CPU 1 instead. Each
process is its own OS process; every wait is bounded, and child processes are stopped in `finally`, Ctrl-C
included. Only 127.0.0.1 is ever contacted.

`--startup N` only starts and stops each variant N times (rounds interleaved) and reports its start-up.

Output: a JSON report (default docs/benchmarks.json) and Markdown, written between the
`<!-- bench:start -->`/`<!-- bench:end -->` markers of --out-md (default docs/benchmarks.md; the start-up
report between `<!-- bench-startup:start -->`/`<!-- bench-startup:end -->`) when it has them, else as a
whole file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from benchmarks import analysis, procfs, report, stats
from benchmarks.standin import ALERT_PHRASE

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SAMPLE_INTERVAL_S = 0.5
RESCAN_EVERY = 10  # samples between looking for new processes in the service's tree
TAIL_S = 2.0  # after the load generator ends: the last finals, the summaries, the store
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # the service drains its calls on SIGTERM; they are all over by then
READY_TIMEOUT_S = 15.0
IDLE_SETTLE_S = 1.0  # after the warm-up request, before idle memory is read
LOADGEN_SLACK_S = 60.0  # beyond the plan: preparing, connecting, closing
SERVICE_CPU, HARNESS_CPU = 0, 1
DEFAULT_CALLS, DEFAULT_TRACKS, DEFAULT_STARTS = (25, 50, 100, 200), (1, 2), ("together", "staggered")
NAMED_SCENARIO = (40, 2, "together")  # the "40 both-track calls starting together"
RINGING_S = 5.0  # the "ringing" scenario: the outbound track silent this long (a <Dial> ringing)
CLOSED_PORT = 9  # --startup: the service never reaches Deepgram before a call
FLUX_MODEL = "flux-general-en"  # the Flux variant's DEEPGRAM_MODEL
INBOUND_FLOOR = "inbound-floor"  # benchmarks/inbound_floor.py: reads and decodes, forwards nothing


@dataclass(frozen=True, order=True)
class Scenario:
    """One load shape; ordered so that, within a track count and start, calls grow down the table."""

    tracks: int
    ringing_s: float
    start: str
    duration_s: float
    calls: int

    @property
    def name(self) -> str:
        return report.scenario_name(self.calls, self.tracks, self.start, self.duration_s, self.ringing_s)


@dataclass(frozen=True)
class Variant:
    """One server under test: callscribe (from a checkout), the floor, the inbound floor or the peer."""

    label: str
    served: str  # "callscribe", "floor", INBOUND_FLOOR or "peer"
    checkout: Path = REPO  # callscribe's code and interpreter
    env: tuple[tuple[str, str], ...] = ()  # settings of its own, over --env (the Flux variant's DEEPGRAM_MODEL)
    subscribers: int | None = None  # live feed clients of its own (--subscribers-ab), else --subscribers

    @property
    def python(self) -> str:
        if self.checkout == REPO:
            return PYTHON
        return str(self.checkout / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Options:
    """How every run is done."""

    stagger_s: float
    repeats: int
    env: dict[str, str]
    wrapper: list[str]
    variants: list[Variant]
    pin: bool
    workdir: Path
    subscribers: int = 0  # live feed clients (benchmarks/subscribers.py) open during every run
    attackers: int = 0  # unauthenticated clients posting 15 MB forms (benchmarks/attackers.py) during every run
    workers: int = 1  # callscribe's Hypercorn workers (`serve --workers`): WEB_CONCURRENCY on a dyno


@dataclass
class Children:
    """Every process this runner started, so that `stop_all` can end them whatever happened."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], out: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        # Own session: Ctrl-C reaches only the runner, which then stops the children in order.
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules, no shell
            list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        """SIGTERM, wait, then SIGKILL its whole process group (its own session: only what we started)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers of the tree (a Hypercorn worker), if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process in self.processes:
            self.processes.remove(process)  # stopped and reaped: never signal its ids again

    def stop_all(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process, timeout_s=5)
        self.processes.clear()


def pin(pids: Sequence[int], cpu: int, options: Options) -> None:
    """Keep `pids` on one CPU, when pinning is on; a process that already exited is skipped."""
    if not options.pin:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {cpu})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_env(
    options: Options, variant: Variant, rundir: Path, standin_port: int, token: str, *, tracks: int
) -> dict[str, str]:
    """The service's environment: inherited variables minus any callscribe setting, then ours, then --env."""
    from service.settings import Settings  # noqa: PLC0415 - read-only use of the service's setting names

    names = {name.upper() for name in Settings.model_fields} | {"WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env |= {
        "PYTHONPATH": str(variant.checkout),
        "PYTHONUNBUFFERED": "1",
        "DEEPGRAM_API_KEY": "bench-key",
        "DEEPGRAM_URL": f"http://127.0.0.1:{standin_port}",
        "TWILIO_AUTH_TOKEN": token,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": f"sqlite+aiosqlite:///{rundir / 'bench.sqlite3'}",
        "SPOOL_DIR": str(rundir / "spool"),
        "DB_JOURNAL_PATH": str(rundir / "journal.jsonl"),
        "MAX_CALLS": "10000",
        # The load generator answers every call's /voice before the first stream opens (`loadgen.py`), so a call
        # staggered late starts its stream up to --stagger-s after its answer: the watch for streams that never
        # came must wait that long, or it records such calls as not streamed and their streams are refused.
        "STREAM_START_TIMEOUT_S": str(min(120.0, max(10.0, options.stagger_s + 10.0))),
        # What /voice asks Twilio for, and so the track setting each call's stream token is issued for.
        "STREAM_TRACK": "both_tracks" if tracks == 2 else "inbound_track",
        # The stand-in's finals say ALERT_PHRASE: each caller final raises an alert (`analysis.alert_latencies`).
        "ALERT_RULES": json.dumps([{"name": "bench", "phrases": [ALERT_PHRASE], "speaker": "caller"}]),
        # The live feed's clients authenticate with it; set in every run, so runs with and without them differ
        # only in the clients.
        "API_TOKEN": token,
    }
    return env | options.env | dict(variant.env)


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The content of `path` once it exists; RuntimeError if `process` dies or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout_s} s")
        time.sleep(0.02)
    return path.read_text().strip()


def wait_until_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until GET /healthz answers 200 (or 404: a service without /healthz is up once it answers at all)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the service exited with {process.returncode} while starting:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service did not answer /healthz within {STARTUP_TIMEOUT_S} s")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{port}/healthz").status_code in (200, 404):
                    return
            time.sleep(0.02)


def portable(command: str, options: Options | None = None) -> str:
    """`command` as anyone could run it from the checkout: this machine's interpreter and checkout paths left out,
    so a report names no path of the machine that produced it (a --baseline checkout is `BASELINE`)."""
    for variant in options.variants if options else []:
        if variant.checkout != REPO:
            command = command.replace(str(variant.checkout), "BASELINE")
    return command.replace(PYTHON, "python").replace(f"{REPO}/", "")


def idle_memory(root: int) -> list[dict[str, Any]]:
    """Each process of the service's tree and its RSS, at idle."""
    rows = []
    for pid in procfs.descendants(root):
        with contextlib.suppress(OSError):
            cmdline = (procfs.PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            command = portable(cmdline).split(" ", 1)[-1]  # the interpreter's path left out
            cpus = sorted(os.sched_getaffinity(pid))  # shows whether pinning took
            rows.append(
                {"pid": pid, "command": command[:120], "rss_mib": procfs.rss_bytes(pid) / stats.MIB, "cpus": cpus}
            )
    return rows


def sample_until_exit(
    service: subprocess.Popen[bytes],
    loadgen: subprocess.Popen[bytes],
    standin: subprocess.Popen[bytes],
    timeout_s: float,
) -> list[analysis.Tick]:
    """/proc samples of the service tree and the harness, every SAMPLE_INTERVAL_S, from the load generator's
    start until TAIL_S after it ended (the calls' last work: finals, summaries, the store)."""
    deadline = time.monotonic() + timeout_s
    ticks: list[analysis.Tick] = []
    pids: list[int] = []
    ended_at: float | None = None
    loadgen_cpu_s = 0.0
    while ended_at is None or time.monotonic() < ended_at + TAIL_S:
        if ended_at is None and loadgen.poll() is not None:
            ended_at = time.monotonic()
        if ended_at is None:  # an exited process reads 0: its last reading stands for the tail
            loadgen_cpu_s = procfs.cpu_seconds(loadgen.pid) or loadgen_cpu_s
        if time.monotonic() > deadline:
            raise TimeoutError(f"the load generator did not finish within {timeout_s:.0f} s")
        if len(ticks) % RESCAN_EVERY == 0:  # scanning all of /proc costs the harness core; the tree is stable
            pids = procfs.descendants(service.pid)
        ticks.append(
            analysis.Tick(
                t_ns=time.monotonic_ns(),
                service_cpu_s=procfs.tree_cpu_seconds(pids),
                service_rss_bytes=procfs.tree_rss_bytes(pids),
                loadgen_cpu_s=loadgen_cpu_s,
                standin_cpu_s=procfs.cpu_seconds(standin.pid),
            )
        )
        time.sleep(SAMPLE_INTERVAL_S)
    if loadgen.returncode != 0:
        raise RuntimeError(f"the load generator exited with {loadgen.returncode}")
    return ticks


def start_standin(rundir: Path, options: Options, children: Children) -> tuple[subprocess.Popen[bytes], int]:
    """The Deepgram stand-in (on the harness core when pinned), and the port it bound."""
    standin = children.spawn(
        [PYTHON, "-m", "benchmarks.standin", "--ready-file", str(rundir / "standin.port"),
         "--record-file", str(rundir / "standin.json")],
        cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    pin([standin.pid], HARNESS_CPU, options)
    return standin, int(wait_for_file(rundir / "standin.port", standin, READY_TIMEOUT_S))


def server_command(variant: Variant, port: int, workers: int = 1) -> list[str]:
    if variant.served in ("floor", INBOUND_FLOOR):
        app = "benchmarks.floor:app" if variant.served == "floor" else "benchmarks.inbound_floor:app"
        return [PYTHON, "-m", "hypercorn", "--workers", "1", "--bind", f"127.0.0.1:{port}", app]
    if variant.served == "peer":
        return [PYTHON, "-m", "benchmarks.peer", "--port", str(port)]
    return [variant.python, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]  # fmt: skip


def start_service(
    rundir: Path,
    options: Options,
    variant: Variant,
    children: Children,
    *,
    env: dict[str, str],
    port: int,
    log: IO[bytes],
) -> tuple[subprocess.Popen[bytes], dict[str, Any], list[dict[str, Any]]]:
    """A fresh server; its start-up (time and the CPU of its tree until /healthz answers) and, once warmed up
    and settled, idle memory."""
    spawned_ns = time.monotonic_ns()
    command = [*options.wrapper, *server_command(variant, port, options.workers)]
    if variant.served != "callscribe":
        env = env | {"PYTHONPATH": str(REPO)}
    service = children.spawn(command, cwd=rundir, env=env, out=log)
    pin([service.pid], SERVICE_CPU, options)  # before Hypercorn spawns any worker, which inherits it
    wait_until_up(port, service, rundir / "service.log")
    startup = {
        "startup_ms": (time.monotonic_ns() - spawned_ns) / stats.NS_PER_MS,
        "startup_cpu_s": procfs.tree_cpu_seconds(procfs.descendants(service.pid)),
    }
    pin(procfs.descendants(service.pid), SERVICE_CPU, options)  # in case a wrapper started it elsewhere
    with httpx.Client(timeout=5.0) as client:
        client.get(f"http://127.0.0.1:{port}/healthz")  # warm-up: the first request's imports and caches
    time.sleep(IDLE_SETTLE_S)
    idle = idle_memory(service.pid)
    startup["idle_rss_mib"] = sum(row["rss_mib"] for row in idle)
    startup["processes"] = len(idle)
    return service, startup, idle


def start_clients(
    rundir: Path, options: Options, children: Children, name: str, *, count: int, extra: list[str], port: int
) -> subprocess.Popen[bytes] | None:
    """`count` clients of `benchmarks.<name>` on the harness core, all started before the load starts."""
    if not count:
        return None
    process = children.spawn(
        [PYTHON, "-m", f"benchmarks.{name}", "--url", f"http://127.0.0.1:{port}", "--count", str(count), *extra,
         "--ready-file", str(rundir / f"{name}.ready"), "--out", str(rundir / f"{name}.json")],
        cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    pin([process.pid], HARNESS_CPU, options)
    wait_for_file(rundir / f"{name}.ready", process, READY_TIMEOUT_S)
    return process


def subscribers_of(variant: Variant, options: Options) -> int:
    """How many live feed clients a run of `variant` has open: only callscribe serves the feed."""
    if variant.served != "callscribe":
        return 0
    return variant.subscribers if variant.subscribers is not None else options.subscribers


def run_once(
    scenario: Scenario, variant: Variant, options: Options, repeat: int, children: Children
) -> tuple[analysis.Metrics, dict[str, Any]]:
    """One fresh server, one load: its metrics (numbers, for medians) and details (everything else)."""
    rundir = options.workdir / f"{scenario.name.replace(' ', '_').replace(',', '')}-{variant.label}-r{repeat}"
    rundir.mkdir(parents=True)
    shutil.copy(options.workdir / "template.sqlite3", rundir / "bench.sqlite3")
    standin, standin_port = start_standin(rundir, options, children)
    token, port = secrets.token_hex(16), free_port()
    with (rundir / "service.log").open("wb") as log:
        env = service_env(options, variant, rundir, standin_port, token, tracks=scenario.tracks)
        service, startup, idle = start_service(rundir, options, variant, children, env=env, port=port, log=log)
        callscribe = variant.served == "callscribe"
        subscriber_count = subscribers_of(variant, options)
        subscribers = start_clients(
            rundir, options, children, "subscribers", count=subscriber_count, extra=["--token", token], port=port
        )
        # The peer serves no /voice or /login to attack: only callscribe's runs get the attackers.
        attackers = start_clients(
            rundir, options, children, "attackers", count=options.attackers if callscribe else 0, extra=[], port=port
        )
        wall_offset_ns = time.time_ns() - time.monotonic_ns()
        loadgen = children.spawn(
            [PYTHON, "-m", "benchmarks.loadgen", "--url", f"ws://127.0.0.1:{port}/media",
             "--calls", str(scenario.calls), "--tracks", str(scenario.tracks), "--start", scenario.start,
             "--stagger-s", str(options.stagger_s), "--duration-s", str(scenario.duration_s), "--token", token,
             "--ringing-s", str(scenario.ringing_s), "--out", str(rundir / "loadgen.json"),
             *(["--no-voice"] if variant.served == "peer" else [])],
            cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        pin([loadgen.pid], HARNESS_CPU, options)
        budget = scenario.duration_s + options.stagger_s + LOADGEN_SLACK_S
        ticks = sample_until_exit(service, loadgen, standin, budget)
        for clients in (subscribers, attackers):
            if clients is not None:
                children.stop(clients, READY_TIMEOUT_S)
        children.stop(service, STOP_TIMEOUT_S)
    children.stop(standin, READY_TIMEOUT_S)
    metrics, details = analyse(rundir, scenario, ticks=ticks, idle=idle, startup=startup, wall_offset_ns=wall_offset_ns)
    if variant.served == INBOUND_FLOOR:  # it forwards nothing by design: no frame is lost, none has a latency
        metrics |= {"frames_received": None, "frames_lost": None}
    if subscribers is not None:
        record = json.loads((rundir / "subscribers.json").read_text())
        details["subscribers"] = {"count": subscriber_count, "events": record["events"], "cpu_s": record["cpu_s"]}
    if attackers is not None:
        record = json.loads((rundir / "attackers.json").read_text())
        details["attackers"] = {"count": options.attackers, "statuses": record["statuses"], "cpu_s": record["cpu_s"]}
    return metrics, details


def analyse(
    rundir: Path,
    scenario: Scenario,
    *,
    ticks: list[analysis.Tick],
    idle: list[dict[str, Any]],
    startup: dict[str, Any],
    wall_offset_ns: int,
) -> tuple[analysis.Metrics, dict[str, Any]]:
    """Join the run's records into its metrics."""
    loadgen = json.loads((rundir / "loadgen.json").read_text())
    standin = json.loads((rundir / "standin.json").read_text())
    window = analysis.planned_window(loadgen)
    join = analysis.join_frames(loadgen, standin["received"], window)
    with (rundir / "service.log").open(errors="replace") as log:
        wall = (window.start_ns + wall_offset_ns, window.end_ns + wall_offset_ns)
        results = analysis.result_latencies(log, wall)
        log.seek(0)
        alerts = analysis.alert_latencies(log, wall)
    idle_rss = sum(round(row["rss_mib"] * stats.MIB) for row in idle)
    metrics: analysis.Metrics = {
        **startup,
        **analysis.latency_metrics(join, results, alerts),
        **analysis.resource_metrics(ticks, window, join, idle_rss, scenario.calls),
        **analysis.whole_call_metrics(ticks, window, join, scenario.calls),
        **analysis.call_metrics(loadgen, standin),
    }
    errors = sorted({call["error"] for call in loadgen["calls"] if call["error"]})
    details = {
        "window_fallback": window.fallback,
        "idle_rss_per_process": idle,
        "call_errors": errors[:10],
        "limits": analysis.limits(metrics),
        "per_second": analysis.per_second(join),
        "standin": {key: standin[key] for key in ("connections", "results_sent", "closed_by_close_stream",
                                                   "duplicate_frames", "untagged_frames", "silent_frames",
                                                   "cpu_s", "wall_s")},
        "loadgen": {key: loadgen[key] for key in ("cpu_s", "wall_s", "prepare_s", "prepare_cpu_s")},
    }  # fmt: skip
    return metrics, details


def skipped(scenario: Scenario, variant: Variant) -> str | None:
    """Why `variant` cannot serve `scenario`, if it cannot."""
    if variant.served == "peer" and scenario.tracks != 2:
        return "the peer's design needs both tracks (it sends only when both have 0.4 s)"
    return None


def run_grid(scenarios: Sequence[Scenario], options: Options, children: Children) -> list[dict[str, Any]]:
    """Every scenario, round by round, each round running every variant in turn."""
    entries = []
    for scenario in scenarios:
        runs: dict[str, list[analysis.Metrics | None]] = {variant.label: [] for variant in options.variants}
        details: dict[str, list[dict[str, Any]]] = {variant.label: [] for variant in options.variants}
        for repeat in range(options.repeats):
            for variant in options.variants:
                if skipped(scenario, variant):
                    continue
                print(f"{scenario.name} [{variant.label}]: round {repeat + 1}/{options.repeats}", flush=True)
                try:
                    metrics, detail = run_once(scenario, variant, options, repeat, children)
                except (RuntimeError, TimeoutError, OSError, ValueError, KeyError) as exc:
                    children.stop_all()
                    runs[variant.label].append(None)
                    details[variant.label].append({"error": f"{type(exc).__name__}: {exc}"})
                    print(f"  failed: {exc}", flush=True)
                    continue
                runs[variant.label].append(metrics)
                details[variant.label].append(detail)
        entries += [scenario_entry(scenario, variant, runs, details, options) for variant in options.variants]
    return entries


def scenario_entry(
    scenario: Scenario,
    variant: Variant,
    runs: dict[str, list[analysis.Metrics | None]],
    details: dict[str, list[dict[str, Any]]],
    options: Options,
) -> dict[str, Any]:
    """One scenario and variant: medians over its rounds, per-second latency, and ratios to the first variant."""
    why_not = skipped(scenario, variant)
    done = [run for run in runs[variant.label] if run is not None]
    median = stats.median_of_runs(done)
    first = options.variants[0].label
    ratios = {} if variant.label == first else stats.ratios_per_round(runs[variant.label], runs[first])
    series = [detail["per_second"] for detail in details[variant.label] if "per_second" in detail]
    floors = [v.label for v in options.variants if v.served == INBOUND_FLOOR]
    to_floor = (
        {key: stats.per_round_ratios(runs[variant.label], runs[floors[0]], key) for key in stats.FLOOR_RATIO_KEYS}
        if floors and variant.served != INBOUND_FLOOR
        else {}
    )
    return {
        "name": scenario.name,
        "variant": variant.label,
        "served": variant.served,
        "calls": scenario.calls,
        "tracks": scenario.tracks,
        "start": scenario.start,
        "duration_s": scenario.duration_s,
        "ringing_s": scenario.ringing_s,
        "repeats": options.repeats,
        "completed_runs": len(done),
        "skipped": why_not,
        "median": median,
        "ratios_to_first": ratios,
        "cpu_to_inbound_floor": {
            key: {"per_round": per_round, "median": stats.median_or_none(per_round)}
            for key, per_round in to_floor.items()
        },
        "per_second": {key: stats.median_per_index([run[key] for run in series]) for key in ("p50", "p99")},
        "runs": runs[variant.label],
        "details": details[variant.label],
        "limits": analysis.limits(median) if done else ([] if why_not else ["every run failed"]),
    }


def run_startups(options: Options, children: Children) -> list[dict[str, Any]]:
    """--startup: each variant started and stopped, round by round; nothing but start-up and idle measured."""
    rows: dict[str, list[analysis.Metrics | None]] = {variant.label: [] for variant in options.variants}
    for repeat in range(options.repeats):
        for variant in options.variants:
            print(f"start-up [{variant.label}]: round {repeat + 1}/{options.repeats}", flush=True)
            rundir = options.workdir / f"startup-{variant.label}-r{repeat}"
            rundir.mkdir(parents=True)
            shutil.copy(options.workdir / "template.sqlite3", rundir / "bench.sqlite3")
            env = service_env(options, variant, rundir, CLOSED_PORT, secrets.token_hex(16), tracks=1)
            with (rundir / "service.log").open("wb") as log:
                service, startup, _ = start_service(
                    rundir, options, variant, children, env=env, port=free_port(), log=log
                )
                children.stop(service, STOP_TIMEOUT_S)
            rows[variant.label].append(startup)
    first = options.variants[0].label
    return [
        {
            "variant": variant.label,
            "served": variant.served,
            "median": stats.median_of_runs([run for run in rows[variant.label] if run is not None]),
            "ratios_to_first": {}
            if variant.label == first
            else stats.ratios_per_round(rows[variant.label], rows[first]),
            "runs": rows[variant.label],
        }
        for variant in options.variants
    ]


def first_limit(scenarios: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest load (fewest calls, then table order) at which something gave out."""
    failing = [scenario for scenario in scenarios if scenario["limits"]]
    if not failing:
        return None
    first = min(failing, key=lambda scenario: scenario["calls"])
    return {"scenario": f"{first['name']} [{first['variant']}]", "limits": first["limits"]}


def prepare_database(workdir: Path) -> None:
    """Migrate one SQLite file; every run starts from a copy (saves the migration's second per run)."""
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'template.sqlite3'}",
    }
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [PYTHON, "-m", "service", "db", "upgrade"], cwd=workdir, env=env, check=True, capture_output=True, timeout=120
    )


def git_revision(checkout: Path = REPO) -> tuple[str, bool]:
    """(short revision, whether the work tree has changes); ("unknown", False) outside git."""
    git = shutil.which("git")
    if git is None:
        return "unknown", False
    try:
        revision = subprocess.run(  # noqa: S603 - git from PATH, fixed arguments
            [git, "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(  # noqa: S603
            [git, "status", "--porcelain"], cwd=checkout, capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return revision, bool(status.strip())


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    """--quick's two, or the grid of --calls x --tracks x --start plus each --scenario (default: the full grid
    and the issue's 40 both-track calls starting together), each for every --duration-s."""
    durations = args.duration_s
    if args.quick:
        return [Scenario(1, 0.0, "together", durations[0], 3), Scenario(2, 0.0, "together", durations[0], 2)]
    shapes = {(tracks, ringing, start, calls) for calls, tracks, ringing, start in args.scenario}
    grid_asked = any(value is not None for value in (args.calls, args.tracks, args.start))
    if grid_asked or not shapes:
        for tracks in args.tracks or DEFAULT_TRACKS:
            for start in args.start or DEFAULT_STARTS:
                shapes |= {(tracks, 0.0, start, calls) for calls in args.calls or DEFAULT_CALLS}
    if not grid_asked and not args.scenario:
        calls, tracks, start = NAMED_SCENARIO
        shapes |= {(tracks, 0.0, start, calls), (tracks, RINGING_S, start, calls)}
    return sorted(
        Scenario(tracks, ringing, start, d, calls) for tracks, ringing, start, calls in shapes for d in durations
    )


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
    return values


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _tracks(text: str) -> tuple[int, ...]:
    values = _int_list(text)
    if set(values) - {1, 2}:
        raise argparse.ArgumentTypeError("tracks are 1 (inbound) or 2 (both_tracks)")
    return values


def _starts(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or set(values) - {"together", "staggered"}:
        raise argparse.ArgumentTypeError("start is together and/or staggered")
    return values


def _scenario(text: str) -> tuple[int, int, float, str]:
    try:
        calls, tracks, start = text.split(":")
        if tracks == "ringing":
            return _int_list(calls)[0], 2, RINGING_S, _starts(start)[0]
        return _int_list(calls)[0], _tracks(tracks)[0], 0.0, _starts(start)[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected CALLS:TRACKS:START such as 40:2:together (TRACKS 1, 2 or ringing), got {text!r}"
        ) from exc


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m benchmarks.run`."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=_int_list, help="simultaneous calls, e.g. 25,50,100,200 (the default grid)")
    p.add_argument("--tracks", type=_tracks, help="1 (inbound_track) and/or 2 (both_tracks); default 1,2")
    p.add_argument("--start", type=_starts, help="together and/or staggered; default both")
    p.add_argument(
        "--scenario", type=_scenario, action="append", default=[],
        help=f"CALLS:TRACKS:START, repeatable; TRACKS 'ringing' is both tracks, the outbound silent {RINGING_S:g} s",
    )  # fmt: skip
    p.add_argument("--duration-s", type=_float_list, default=(20.0,), help="audio per call, s; e.g. 10,60 (20)")
    p.add_argument("--stagger-s", type=float, default=5.0, help="staggered starts spread over this (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the report takes medians (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 calls x 1 track and 2 x both, 3 s, once")
    p.add_argument("--startup", action="store_true", help="only start and stop the server, --repeats times")
    p.add_argument("--env", type=_env_pair, action="append", default=[], help="KEY=VALUE for the service")
    p.add_argument("--label", default="callscribe", help="a name for this checkout's callscribe in the report")
    p.add_argument(
        "--no-flux", action="store_true", help=f"leave out callscribe on Deepgram Flux ({FLUX_MODEL}), run by default"
    )
    p.add_argument("--service-wrapper", default="", help='prefix for the service command, e.g. "py-spy record -o x --"')
    served = p.add_mutually_exclusive_group()
    served.add_argument(
        "--floor", action="store_true", help="serve benchmarks/floor.py (Hypercorn + SDK, nothing else) instead"
    )
    served.add_argument("--peer", action="store_true", help="also serve benchmarks/peer.py, in turn with callscribe")
    p.add_argument(
        "--floors", action="store_true",
        help="also serve both floors (benchmarks/floor.py, then benchmarks/inbound_floor.py) in each round, after "
        "callscribe and the peer: --inbound-floor and the floor, in the same rounds",
    )  # fmt: skip
    p.add_argument(
        "--inbound-floor", action="store_true",
        help="also serve benchmarks/inbound_floor.py (Hypercorn + orjson + base64, nothing sent) in each round, and "
        "report callscribe's CPU per round as a ratio to it",
    )  # fmt: skip
    p.add_argument("--baseline", type=Path, help="also callscribe from this checkout (its .venv), first in each round")
    p.add_argument("--pin", action="store_true", help="the server on CPU 0, the harness on CPU 1 (default: shared)")
    p.add_argument("--subscribers", type=int, default=0, help="live feed clients (GET /api/live) open during every run")
    p.add_argument(
        "--subscribers-ab", type=int, default=0, metavar="N",
        help="also serve this checkout with N live feed clients open, right after it in every round: its ratios to "
        "the first variant are what N open pages cost the calls",
    )  # fmt: skip
    p.add_argument(
        "--attackers", type=int, default=0, help="unauthenticated clients posting 15 MB forms during every run"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="callscribe's Hypercorn workers (WEB_CONCURRENCY on a dyno); default 1"
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep the run directories (logs, records)")
    p.add_argument("--out-json", type=Path, default=REPO / "docs" / "benchmarks.json")
    p.add_argument("--out-md", type=Path, default=REPO / "docs" / "benchmarks.md")
    return p


def variants_from(args: argparse.Namespace) -> list[Variant]:
    """The servers each round runs, in order; ratios are to the first."""
    inbound = [Variant(INBOUND_FLOOR, INBOUND_FLOOR)] if args.inbound_floor or args.floors else []
    if args.floor:
        return [Variant("floor", "floor"), *inbound]
    if args.floors:
        inbound.insert(0, Variant("floor", "floor"))
    variants = [Variant("baseline", "callscribe", args.baseline.resolve())] if args.baseline else []
    variants.append(Variant(args.label, "callscribe"))
    if args.subscribers_ab:  # the same checkout with N pages open, in the same rounds
        pages = args.subscribers_ab
        variants.append(Variant(f"{args.label}-{pages}pages", "callscribe", subscribers=pages))
    if not args.no_flux:  # the same checkout on Flux (/v2/listen; the stand-in speaks it too), in the same rounds
        variants.append(Variant(f"{args.label}-flux", "callscribe", env=(("DEEPGRAM_MODEL", FLUX_MODEL),)))
    if args.peer:
        variants.append(Variant("peer", "peer"))
    return variants + inbound


def write_outputs(result: dict[str, Any], out_json: Path, out_md: Path) -> None:
    """The JSON report, and the Markdown block (inside the markers if --out-md has them, else a whole file)."""
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    startup = result.get("startup_only", False)
    block = report.startup_block(result) if startup else report.markdown_block(result)
    markers = report.STARTUP_MARKERS if startup else report.MARKERS
    existing = out_md.read_text() if out_md.exists() else ""
    replaced = report.replace_block(existing, block, markers)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(replaced if replaced is not None else report.standalone(block, markers))


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario, write the report, print a summary. Exit 1 if any run failed, 130 on Ctrl-C."""
    args = parser().parse_args(argv)
    if args.floor and args.floors:
        parser().error(
            "--floor serves the floor instead of callscribe; --floors serves it beside callscribe: one or the other"
        )
    if args.quick:
        args.duration_s, args.repeats = (3.0,), 1
    pinning = args.pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    workdir = Path(tempfile.mkdtemp(prefix="callscribe-bench-"))
    options = Options(
        stagger_s=args.stagger_s,
        repeats=args.repeats,
        env=dict(args.env),
        wrapper=shlex.split(args.service_wrapper),
        variants=variants_from(args),
        pin=pinning,
        workdir=workdir,
        subscribers=args.subscribers,
        attackers=args.attackers,
        workers=args.workers,
    )
    pin([os.getpid()], HARNESS_CPU, options)  # the runner is harness too
    children = Children()
    ok = False
    try:
        prepare_database(workdir)
        if args.startup:
            startups = run_startups(options, children)
            results: list[dict[str, Any]] = []
            ok = all(None not in row["runs"] for row in startups)
        else:
            startups = []
            results = run_grid(scenarios_from(args), options, children)
            ok = all(entry["completed_runs"] == options.repeats or entry["skipped"] for entry in results)
    except KeyboardInterrupt:
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if ok and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"run directories (logs, records): {workdir}", file=sys.stderr)
    result = report_of(args, argv, options, results, startups)
    write_outputs(result, args.out_json, args.out_md)
    print(report.startup_summary(result) if args.startup else report.console_summary(result))
    return 0 if ok else 1


def report_of(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    options: Options,
    results: list[dict[str, Any]],
    startups: list[dict[str, Any]],
) -> dict[str, Any]:
    revision, dirty = git_revision()
    command = shlex.join([PYTHON, "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    return {
        "label": args.label,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": portable(command, options),
        "git_revision": revision,
        "git_dirty": dirty,
        "variants": [
            {"label": v.label, "served": v.served, "git_revision": git_revision(v.checkout)[0]}
            for v in options.variants
        ],
        "machine": machine_info(),
        "pinned": options.pin,
        "durations_s": list(args.duration_s),
        "stagger_s": options.stagger_s,
        "repeats": options.repeats,
        "env": [f"{key}={value}" for key, value in options.env.items()],
        "service_wrapper": args.service_wrapper,
        "floor": args.floor,
        "inbound_floor": args.inbound_floor or args.floors,
        "floors": args.floors,
        "subscribers": args.subscribers,
        "subscribers_ab": args.subscribers_ab,
        "attackers": args.attackers,
        "workers": args.workers,
        "peer": args.peer,
        "startup_only": args.startup,
        "startup": startups,
        "scenarios": results,
        "first_limit": first_limit(results),
        "p99_crossing": report.p99_crossings(results, cores=os.cpu_count() or 1),
    }


if __name__ == "__main__":
    raise SystemExit(main())
