"""Orchestrator: `python -m benchmarks.run` (`make bench`) plays N calls through a fresh service per run.

For each scenario (calls x tracks x start) and repeat: start the Deepgram stand-in, start the real service
(`python -m service serve --workers 1`, Hypercorn) pointed at it, measure its start-up and idle memory, run the
load generator while sampling the service's process tree from /proc, stop everything, then join the records
(benchmarks/analysis.py). Each process is its own OS process; with two or more CPUs the service's tree is
pinned to CPU 0 and the harness (stand-in, load generator, this runner) to CPU 1, so the service has a core to
itself and a saturated harness cannot steal from it. Every wait is bounded, and child processes are stopped
in `finally`, Ctrl-C included. Only 127.0.0.1 is ever contacted.

Output: a JSON report (default docs/benchmarks.json) and a Markdown table, written between the
`<!-- bench:start -->`/`<!-- bench:end -->` markers of --out-md (default docs/benchmarks.md) when it has them,
else as a whole file.
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

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SAMPLE_INTERVAL_S = 0.5
RESCAN_EVERY = 10  # samples between looking for new processes in the service's tree
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # the service drains its calls on SIGTERM; they are all over by then
READY_TIMEOUT_S = 15.0
IDLE_SETTLE_S = 1.0  # after the warm-up request, before idle memory is read
LOADGEN_SLACK_S = 60.0  # beyond the plan: preparing, connecting, closing
SERVICE_CPU, HARNESS_CPU = 0, 1
DEFAULT_CALLS, DEFAULT_TRACKS, DEFAULT_STARTS = (25, 50, 100, 200), (1, 2), ("together", "staggered")
NAMED_SCENARIO = (40, 1, "together")  # the "40 calls, single track, all starting at the same moment"


@dataclass(frozen=True, order=True)
class Scenario:
    """One load shape; ordered so that, within a track count and start, calls grow down the table."""

    tracks: int
    start: str
    calls: int

    @property
    def name(self) -> str:
        return report.scenario_name(self.calls, self.tracks, self.start)


@dataclass(frozen=True)
class Options:
    """How every run is done."""

    duration_s: float
    stagger_s: float
    repeats: int
    env: dict[str, str]
    wrapper: list[str]
    floor: bool  # serve benchmarks/floor.py (the stack alone) instead of callscribe
    pin: bool
    workdir: Path
    subscribers: int = 0  # live feed clients (benchmarks/subscribers.py) open during every run


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


def service_env(options: Options, rundir: Path, standin_port: int, token: str, tracks: int) -> dict[str, str]:
    """The service's environment: inherited variables minus any callscribe setting, then ours, then --env."""
    from service.settings import Settings  # noqa: PLC0415 - read-only use of the service's setting names

    names = {name.upper() for name in Settings.model_fields} | {"WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env |= {
        "PYTHONPATH": str(REPO),
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
        # What /voice asks Twilio for, and so the track setting each call's stream token is issued for.
        "STREAM_TRACK": "both_tracks" if tracks == 2 else "inbound_track",
    }
    if options.subscribers:
        env["API_TOKEN"] = token  # the live feed's clients authenticate with it
    return env | options.env


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


def portable(command: str) -> str:
    """`command` as anyone could run it from the checkout: this machine's interpreter and checkout paths left out,
    so a report names no path of the machine that produced it."""
    return command.replace(PYTHON, "python").replace(f"{REPO}/", "")


def idle_memory(root: int) -> list[dict[str, Any]]:
    """Each process of the service's tree and its RSS, at idle."""
    rows = []
    for pid in procfs.descendants(root):
        with contextlib.suppress(OSError):
            cmdline = (procfs.PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            command = portable(cmdline)
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
    """/proc samples of the service tree and the harness, every SAMPLE_INTERVAL_S, until the load generator ends."""
    deadline = time.monotonic() + timeout_s
    ticks: list[analysis.Tick] = []
    pids: list[int] = []
    while loadgen.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the load generator did not finish within {timeout_s:.0f} s")
        if len(ticks) % RESCAN_EVERY == 0:  # scanning all of /proc costs the harness core; the tree is stable
            pids = procfs.descendants(service.pid)
        ticks.append(
            analysis.Tick(
                t_ns=time.monotonic_ns(),
                service_cpu_s=procfs.tree_cpu_seconds(pids),
                service_rss_bytes=procfs.tree_rss_bytes(pids),
                loadgen_cpu_s=procfs.cpu_seconds(loadgen.pid),
                standin_cpu_s=procfs.cpu_seconds(standin.pid),
            )
        )
        time.sleep(SAMPLE_INTERVAL_S)
    if loadgen.returncode != 0:
        raise RuntimeError(f"the load generator exited with {loadgen.returncode}")
    return ticks


def start_standin(rundir: Path, options: Options, children: Children) -> tuple[subprocess.Popen[bytes], int]:
    """The Deepgram stand-in on the harness core, and the port it bound."""
    standin = children.spawn(
        [PYTHON, "-m", "benchmarks.standin", "--ready-file", str(rundir / "standin.port"),
         "--record-file", str(rundir / "standin.json")],
        cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    pin([standin.pid], HARNESS_CPU, options)
    return standin, int(wait_for_file(rundir / "standin.port", standin, READY_TIMEOUT_S))


def start_service(
    rundir: Path, options: Options, children: Children, *, env: dict[str, str], port: int, log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], float, list[dict[str, Any]]]:
    """A fresh service on its own core; its start-up time (ms) and, once warmed up and settled, idle memory."""
    spawned_ns = time.monotonic_ns()
    if options.floor:
        command = [PYTHON, "-m", "hypercorn", "--workers", "1", "--bind", f"127.0.0.1:{port}", "benchmarks.floor:app"]
    else:
        command = [PYTHON, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    service = children.spawn([*options.wrapper, *command], cwd=rundir, env=env, out=log)
    pin([service.pid], SERVICE_CPU, options)  # before Hypercorn spawns its worker, which inherits it
    wait_until_up(port, service, rundir / "service.log")
    startup_ms = (time.monotonic_ns() - spawned_ns) / stats.NS_PER_MS
    pin(procfs.descendants(service.pid), SERVICE_CPU, options)  # in case a wrapper started it elsewhere
    with httpx.Client(timeout=5.0) as client:
        client.get(f"http://127.0.0.1:{port}/healthz")  # warm-up: the first request's imports and caches
    time.sleep(IDLE_SETTLE_S)
    return service, startup_ms, idle_memory(service.pid)


def start_subscribers(
    rundir: Path, options: Options, children: Children, *, port: int, token: str
) -> subprocess.Popen[bytes] | None:
    """`options.subscribers` live feed clients on the harness core, all connected before the load starts."""
    if not options.subscribers:
        return None
    process = children.spawn(
        [PYTHON, "-m", "benchmarks.subscribers", "--url", f"http://127.0.0.1:{port}", "--count",
         str(options.subscribers), "--token", token, "--ready-file", str(rundir / "subscribers.ready"),
         "--out", str(rundir / "subscribers.json")],
        cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    pin([process.pid], HARNESS_CPU, options)
    wait_for_file(rundir / "subscribers.ready", process, READY_TIMEOUT_S)
    return process


def run_once(
    scenario: Scenario, options: Options, repeat: int, children: Children
) -> tuple[analysis.Metrics, dict[str, Any]]:
    """One fresh service, one load: its metrics (numbers, for medians) and details (everything else)."""
    rundir = options.workdir / f"{scenario.calls}x{scenario.tracks}-{scenario.start}-r{repeat}"
    rundir.mkdir(parents=True)
    shutil.copy(options.workdir / "template.sqlite3", rundir / "bench.sqlite3")
    standin, standin_port = start_standin(rundir, options, children)
    token, port = secrets.token_hex(16), free_port()
    with (rundir / "service.log").open("wb") as log:
        env = service_env(options, rundir, standin_port, token, scenario.tracks)
        service, startup_ms, idle = start_service(rundir, options, children, env=env, port=port, log=log)
        subscribers = start_subscribers(rundir, options, children, port=port, token=token)
        wall_offset_ns = time.time_ns() - time.monotonic_ns()
        loadgen = children.spawn(
            [PYTHON, "-m", "benchmarks.loadgen", "--url", f"ws://127.0.0.1:{port}/media",
             "--calls", str(scenario.calls), "--tracks", str(scenario.tracks), "--start", scenario.start,
             "--stagger-s", str(options.stagger_s), "--duration-s", str(options.duration_s), "--token", token,
             "--out", str(rundir / "loadgen.json")],
            cwd=REPO, env=dict(os.environ) | {"PYTHONPATH": str(REPO)},
        )  # fmt: skip
        pin([loadgen.pid], HARNESS_CPU, options)
        budget = options.duration_s + options.stagger_s + LOADGEN_SLACK_S
        ticks = sample_until_exit(service, loadgen, standin, budget)
        if subscribers is not None:
            children.stop(subscribers, READY_TIMEOUT_S)
        children.stop(service, STOP_TIMEOUT_S)
    children.stop(standin, READY_TIMEOUT_S)
    metrics, details = analyse(
        rundir, scenario, ticks=ticks, idle=idle, startup_ms=startup_ms, wall_offset_ns=wall_offset_ns
    )
    if subscribers is not None:
        record = json.loads((rundir / "subscribers.json").read_text())
        details["subscribers"] = {"count": options.subscribers, "events": record["events"], "cpu_s": record["cpu_s"]}
    return metrics, details


def analyse(
    rundir: Path,
    scenario: Scenario,
    *,
    ticks: list[analysis.Tick],
    idle: list[dict[str, Any]],
    startup_ms: float,
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
    idle_rss = sum(round(row["rss_mib"] * stats.MIB) for row in idle)
    metrics: analysis.Metrics = {
        "startup_ms": startup_ms,
        "idle_rss_mib": idle_rss / stats.MIB,
        **analysis.latency_metrics(join, results),
        **analysis.resource_metrics(ticks, window, join, idle_rss, scenario.calls),
        **analysis.call_metrics(loadgen, standin),
    }
    errors = sorted({call["error"] for call in loadgen["calls"] if call["error"]})
    details = {
        "window_fallback": window.fallback,
        "idle_rss_per_process": idle,
        "call_errors": errors[:10],
        "limits": analysis.limits(metrics),
        "standin": {key: standin[key] for key in ("connections", "results_sent", "closed_by_close_stream",
                                                   "duplicate_frames", "untagged_frames", "cpu_s", "wall_s")},
        "loadgen": {key: loadgen[key] for key in ("cpu_s", "wall_s", "prepare_s", "prepare_cpu_s")},
    }  # fmt: skip
    return metrics, details


def run_scenario(scenario: Scenario, options: Options, children: Children) -> dict[str, Any]:
    """Every repeat of one scenario, and the per-metric medians; a failed repeat is reported, not fatal."""
    runs, details = [], []
    for repeat in range(options.repeats):
        print(f"{scenario.name}: run {repeat + 1}/{options.repeats}", flush=True)
        try:
            metrics, detail = run_once(scenario, options, repeat, children)
        except (RuntimeError, TimeoutError, OSError, ValueError, KeyError) as exc:
            children.stop_all()
            details.append({"error": f"{type(exc).__name__}: {exc}"})
            print(f"  failed: {exc}", flush=True)
            continue
        runs.append(metrics)
        details.append(detail)
    median = stats.median_of_runs(runs)
    return {
        "name": scenario.name,
        "calls": scenario.calls,
        "tracks": scenario.tracks,
        "start": scenario.start,
        "repeats": options.repeats,
        "completed_runs": len(runs),
        "median": median,
        "runs": runs,
        "details": details,
        "limits": analysis.limits(median) if runs else ["every run failed"],
    }


def first_limit(scenarios: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The smallest load (fewest calls, then table order) at which something gave out."""
    failing = [scenario for scenario in scenarios if scenario["limits"]]
    if not failing:
        return None
    first = min(failing, key=lambda scenario: scenario["calls"])
    return {"scenario": first["name"], "limits": first["limits"]}


def prepare_database(workdir: Path) -> None:
    """Migrate one SQLite file; every run starts from a copy (saves the migration's second per run)."""
    env = dict(os.environ) | {
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'template.sqlite3'}",
    }
    subprocess.run(  # noqa: S603 - our own interpreter and module
        [PYTHON, "-m", "service", "db", "upgrade"], cwd=workdir, env=env, check=True, capture_output=True, timeout=120
    )


def git_revision() -> tuple[str, bool]:
    """(short revision, whether the work tree has changes); ("unknown", False) outside git."""
    git = shutil.which("git")
    if git is None:
        return "unknown", False
    try:
        revision = subprocess.run(  # noqa: S603 - git from PATH, fixed arguments
            [git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(  # noqa: S603
            [git, "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
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
    and the issue's 40-calls-together)."""
    if args.quick:
        return [Scenario(1, "together", 3), Scenario(2, "together", 2)]
    chosen = {Scenario(tracks, start, calls) for calls, tracks, start in args.scenario}
    grid_asked = any(value is not None for value in (args.calls, args.tracks, args.start))
    if grid_asked or not chosen:
        calls = args.calls or DEFAULT_CALLS
        for tracks in args.tracks or DEFAULT_TRACKS:
            for start in args.start or DEFAULT_STARTS:
                chosen |= {Scenario(tracks, start, n) for n in calls}
    if not grid_asked and not args.scenario:
        chosen.add(Scenario(NAMED_SCENARIO[1], NAMED_SCENARIO[2], NAMED_SCENARIO[0]))
    return sorted(chosen)


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


def _scenario(text: str) -> tuple[int, int, str]:
    try:
        calls, tracks, start = text.split(":")
        return _int_list(calls)[0], _tracks(tracks)[0], _starts(start)[0]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected CALLS:TRACKS:START such as 40:1:together, got {text!r}") from exc


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
    p.add_argument("--scenario", type=_scenario, action="append", default=[], help="CALLS:TRACKS:START, repeatable")
    p.add_argument("--duration-s", type=float, default=20.0, help="audio per call, seconds (default 20)")
    p.add_argument("--stagger-s", type=float, default=5.0, help="staggered starts spread over this (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="runs per scenario; the report takes medians (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 calls x 1 track and 2 x both, 3 s, once")
    p.add_argument("--env", type=_env_pair, action="append", default=[], help="KEY=VALUE for the service")
    p.add_argument("--label", default="default", help="a name for this configuration in the report")
    p.add_argument("--service-wrapper", default="", help='prefix for the service command, e.g. "py-spy record -o x --"')
    p.add_argument(
        "--floor", action="store_true", help="serve benchmarks/floor.py (Hypercorn + SDK, nothing else) instead"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--subscribers", type=int, default=0, help="live feed clients (GET /api/live) open during every run")
    p.add_argument("--keep-workdir", action="store_true", help="keep the run directories (logs, records)")
    p.add_argument("--out-json", type=Path, default=REPO / "docs" / "benchmarks.json")
    p.add_argument("--out-md", type=Path, default=REPO / "docs" / "benchmarks.md")
    return p


def write_outputs(result: dict[str, Any], out_json: Path, out_md: Path) -> None:
    """The JSON report, and the Markdown block (inside the markers if --out-md has them, else a whole file)."""
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    block = report.markdown_block(result)
    existing = out_md.read_text() if out_md.exists() else ""
    replaced = report.replace_block(existing, block)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(replaced if replaced is not None else report.standalone(block))


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario, write the report, print a summary. Exit 1 if any run failed, 130 on Ctrl-C."""
    args = parser().parse_args(argv)
    if args.quick:
        args.duration_s, args.repeats = 3.0, 1
    pinning = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    workdir = Path(tempfile.mkdtemp(prefix="callscribe-bench-"))
    options = Options(
        duration_s=args.duration_s,
        stagger_s=args.stagger_s,
        repeats=args.repeats,
        env=dict(args.env),
        wrapper=shlex.split(args.service_wrapper),
        floor=args.floor,
        pin=pinning,
        workdir=workdir,
        subscribers=args.subscribers,
    )
    pin([os.getpid()], HARNESS_CPU, options)  # the runner is harness too
    children = Children()
    ok = False
    try:
        prepare_database(workdir)
        results = [run_scenario(scenario, options, children) for scenario in scenarios_from(args)]
        ok = all(scenario["completed_runs"] == options.repeats for scenario in results)
    except KeyboardInterrupt:
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if ok and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"run directories (logs, records): {workdir}", file=sys.stderr)
    revision, dirty = git_revision()
    result = {
        "label": args.label,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": portable(shlex.join([PYTHON, "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])),
        "git_revision": revision,
        "git_dirty": dirty,
        "machine": machine_info(),
        "pinned": pinning,
        "duration_s": options.duration_s,
        "stagger_s": options.stagger_s,
        "repeats": options.repeats,
        "env": [f"{key}={value}" for key, value in options.env.items()],
        "service_wrapper": args.service_wrapper,
        "floor": args.floor,
        "subscribers": args.subscribers,
        "scenarios": results,
        "first_limit": first_limit(results),
    }
    write_outputs(result, args.out_json, args.out_md)
    print(report.console_summary(result))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
