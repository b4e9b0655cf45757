"""Kill `alignloop run` at random moments and resume it: does it end with the uninterrupted run's bytes?

Runs the tiny preset (presets/tiny.yaml) once uninterrupted in a fresh directory and measures when each stage ended
(its stamp's modification time) and when the process exited. Then, `--kills` times, in a fresh directory each: start
`alignloop run`, SIGKILL its whole process group (a power cut) at a moment drawn from a seeded RNG, and resume with a
plain `alignloop run`. Kill moments cover every phase of the run: one inside each stage's interval (and the start-up
before the first stage and the shut-down after the last), the rest uniform over the run's duration.

For every kill it records which stages had finished (their stamps) and the first that had not (running, or about
to start), whether the resumed run
ends with artifacts byte-identical to the uninterrupted run's (the files `tests/pipeline_helpers.snapshot` compares:
data/, artifacts/, reports/iterations.json), which finished stages the resume ran again (they should be Cached), and
any process left running that belongs to the project (its Prefect server) a few seconds after the kill and after the
resume. Prints a table and writes JSON.

    python benchmarks/faults.py                  # 20 kills (about 15 minutes on 2 cores)
    python benchmarks/faults.py --kills 3        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pipeline_helpers import ALIGNLOOP, env_for, make_project, snapshot  # noqa: E402

STARTUP, SHUTDOWN = "(start-up)", "(shut-down)"


def project_processes(project: Path) -> list[str]:
    """Live processes that belong to this project: their PREFECT_HOME is its .prefect (the flow, Prefect's server)."""
    import psutil

    home = str(project.resolve() / ".prefect")
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get("PREFECT_HOME") == home:
                found.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def leftovers_after(project: Path, grace: float) -> list[str]:
    deadline = time.monotonic() + grace
    while True:
        left = project_processes(project)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def stamps(project: Path) -> dict[str, float]:
    """Stage key → when its stamp was written (the stage's end)."""
    directory = project / ".alignloop" / "stamps"
    return {path.stem: path.stat().st_mtime for path in directory.glob("*.json")} if directory.is_dir() else {}


def statuses(project: Path) -> dict[str, str]:
    summary = json.loads((project / "reports" / "summary.json").read_text())
    return {key: step["status"] for key, step in summary["stages"].items()}


def reference_run(workdir: Path) -> dict:
    project = make_project(workdir / "reference")
    start = time.time()
    result = subprocess.run([ALIGNLOOP, "run"], cwd=project, env=env_for(project), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    duration = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{result.stderr[-3000:]}")
    summary = json.loads((project / "reports" / "summary.json").read_text())
    ends = {key: mtime - start for key, mtime in stamps(project).items()}
    order = sorted(ends, key=ends.get)  # stages run one after another: the plan's order
    # stage k ran from (its stamp's time − its seconds) to its stamp's time; the gaps are Prefect and MLflow
    phases = [{"phase": key, "start": round(ends[key] - summary["stages"][key]["seconds"], 2),
               "end": round(ends[key], 2)} for key in order]
    phases.insert(0, {"phase": STARTUP, "start": 0.0, "end": phases[0]["start"]})
    phases.append({"phase": SHUTDOWN, "start": phases[-1]["end"], "end": round(duration, 2)})
    return {"project": project, "snapshot": snapshot(project), "duration": round(duration, 2), "phases": phases,
            "order": order, "ends": {key: round(value, 2) for key, value in ends.items()},
            "leftovers": leftovers_after(project, 10)}


def kill_moments(reference: dict, kills: int, rng: random.Random) -> list[dict]:
    """Kill moments on the uninterrupted run's clock: one inside each phase (start-up, each stage's own interval,
    shut-down; a seeded choice of them when there are more phases than kills), the rest uniform over the run.

    Each moment is replayed relative to the latest stage that had finished by then in the reference (its anchor): the
    killed run is killed that long after its own stamp of the anchor appears, so a kill meant for a stage lands in it
    even when the machine runs slower or faster than during the reference."""
    phases = [phase for phase in reference["phases"] if phase["end"] > phase["start"]]
    chosen = phases if kills >= len(phases) else sorted(rng.sample(phases, kills), key=phases.index)
    drawn = [(rng.uniform(phase["start"], phase["end"]), phase["phase"]) for phase in chosen]
    drawn += [(rng.uniform(0.0, reference["duration"]), "uniform") for _ in range(kills - len(chosen))]
    moments = []
    for at, target in sorted(drawn):
        finished = [key for key in reference["order"] if reference["ends"][key] <= at]
        anchor = finished[-1] if finished else None
        delay = at - (reference["ends"][anchor] if anchor else 0.0)
        moments.append({"at": round(at, 2), "target": target, "anchor": anchor, "delay": round(delay, 3)})
    return moments


def killed_and_resumed(project: Path, moment: dict, order: list[str]) -> dict:
    process = subprocess.Popen([ALIGNLOOP, "run"], cwd=project, env=env_for(project), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
    anchored = time.time()
    if moment["anchor"] is not None:
        stamp = project / ".alignloop" / "stamps" / f"{moment['anchor']}.json"
        while not stamp.exists() and process.poll() is None:
            time.sleep(0.005)
        anchored = time.time()
    while time.time() - anchored < moment["delay"] and process.poll() is None:
        time.sleep(0.005)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)  # a power cut: the whole process group at once
    process.wait()
    finished = set(stamps(project))
    running = next((key for key in order if key not in finished), None)
    left_after_kill = leftovers_after(project, 10)

    resume_start = time.time()
    resumed = subprocess.run([ALIGNLOOP, "run"], cwd=project, env=env_for(project), capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    resume_seconds = time.time() - resume_start
    status = statuses(project) if resumed.returncode == 0 else {}
    return {**moment, "killed": killed, "running": running if killed else None,
            "finished_before_kill": sorted(finished, key=order.index),
            "resume_exit": resumed.returncode, "resume_error": resumed.stderr.strip().splitlines()[-1:],
            "resume_seconds": round(resume_seconds, 1),
            "reran_finished": sorted((key for key in finished if status.get(key) == "ran"), key=order.index),
            "leftovers_after_kill": left_after_kill, "leftovers_after_resume": leftovers_after(project, 10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="killed-and-resumed runs (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", type=Path, help="keep the projects here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path("reports/faults.json"))
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alignloop-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    reference = reference_run(workdir)
    print(f"uninterrupted run: {reference['duration']:.1f} s, {len(reference['snapshot'])} artifact files")
    for phase in reference["phases"]:
        print(f"  {phase['phase']:<14}{phase['start']:>7.1f} → {phase['end']:>6.1f} s")

    rng = random.Random(args.seed)
    trials = []
    print(f"\n{'#':>3}{'kill s':>8}  {'aimed at':<13}{'unfinished':<13}{'finished':>9}{'identical':>10}{'re-ran':>8}"
          f"{'left':>6}{'resume s':>10}")
    for number, moment in enumerate(kill_moments(reference, args.kills, rng), 1):
        project = make_project(workdir / f"kill-{number:02d}")
        trial = killed_and_resumed(project, moment, reference["order"])
        trial["identical"] = trial["resume_exit"] == 0 and snapshot(project) == reference["snapshot"]
        if trial["resume_exit"] == 0 and not trial["identical"]:
            ours = snapshot(project)
            trial["differs"] = sorted(name for name in set(ours) | set(reference["snapshot"])
                                      if ours.get(name) != reference["snapshot"].get(name))
        trials.append(trial)
        left = len(trial["leftovers_after_kill"]) + len(trial["leftovers_after_resume"])
        print(f"{number:>3}{trial['at']:>8.1f}  {trial['target']:<13}{str(trial['running'] or '(none)'):<13}"
              f"{len(trial['finished_before_kill']):>9}"
              f"{'yes' if trial['identical'] else 'NO':>10}{len(trial['reran_finished']):>8}{left:>6}"
              f"{trial['resume_seconds']:>10.1f}", flush=True)
        if args.workdir is None:
            shutil.rmtree(project, ignore_errors=True)

    killed = [trial for trial in trials if trial["killed"]]
    result = {
        "preset": "presets/tiny.yaml", "seed": args.seed, "kills": args.kills,
        "reference": {"seconds": reference["duration"], "phases": reference["phases"],
                      "leftovers": reference["leftovers"]},
        "killed_runs": len(killed),
        "identical_after_resume": sum(trial["identical"] for trial in trials),
        "finished_stages_rerun": sum(len(trial["reran_finished"]) for trial in trials),
        "runs_with_finished_stages_rerun": sum(bool(trial["reran_finished"]) for trial in trials),
        "leftover_processes_after_kill": sum(len(trial["leftovers_after_kill"]) for trial in trials),
        "leftover_processes_after_resume": sum(len(trial["leftovers_after_resume"]) for trial in trials),
        "stages_killed_in": sorted({trial["running"] or "(none)" for trial in killed},
                                   key=lambda key: (reference["order"] + ["(none)"]).index(key)),
        "trials": trials,
    }
    print(f"\n{result['identical_after_resume']}/{len(trials)} resumed runs byte-identical to the uninterrupted run; "
          f"{result['finished_stages_rerun']} finished stage(s) re-ran; leftover processes: "
          f"{result['leftover_processes_after_kill']} after kills, {result['leftover_processes_after_resume']} after "
          f"resumes; kills landed in: {', '.join(result['stages_killed_in'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
