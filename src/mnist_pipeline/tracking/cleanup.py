"""`mnist runs list|cleanup`: MLflow runs left RUNNING by a process that is gone.

A training process killed with SIGKILL (the OOM killer, a lost node, `kill -9`) cannot end its run,
which then stays RUNNING for ever. Every run carries the tags `host`, `pid` and `pid_start_time`
(see `runs.process_tags`); `cleanup` finds the RUNNING runs whose process is gone and marks
them FAILED, with the tag `cleanup` and the last step they logged. A process is gone when no
process has that PID, or the one that has it started at another time (the PID was reused), or
it is a zombie. Runs of another host (a shared server) are never marked: from here we cannot see
their processes. `--dry-run` only says what it would do; `list` shows the RUNNING runs and what
`cleanup` would make of each.

`sync <output folder>` sends what a run's tracking server did not take (see `sync.py`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from mnist_pipeline.tracking.runs import process_state
from mnist_pipeline.tracking.store import StoreError, add_store_args, experiment_id, experiment_name, open_store

LAST_STEP_METRIC = "train/loss"
CLEANUP_TAG = "cleanup"
GONE = "process gone"


def last_step(client, run_id: str) -> tuple[int | None, int | None]:
    """(max step of the run's train/loss history, the timestamp in ms of that entry); (None, None) if none."""
    history = client.get_metric_history(run_id, LAST_STEP_METRIC)
    if not history:
        return None, None
    last = max(history, key=lambda m: (m.step, m.timestamp))
    return last.step, max(m.timestamp for m in history)


def mark_gone(client, run_id: str) -> int | None:
    """Mark a RUNNING run whose process is gone FAILED, with the tag `cleanup` and its last step, as
    ending when it last wrote; returns that step (None: none logged)."""
    step, last_ts = last_step(client, run_id)
    client.set_tag(run_id, CLEANUP_TAG, GONE)
    if step is not None:
        client.set_tag(run_id, "last_step", str(step))
    client.set_terminated(run_id, "FAILED", end_time=last_ts or int(time.time() * 1000))  # not now
    return step


def running_runs(client, experiment: str) -> list:
    return client.search_runs([experiment_id(client, experiment)], "attributes.status = 'RUNNING'",
                              order_by=["attributes.start_time ASC"], max_results=50000)


def _step_text(step: int | None) -> str:
    return "no step logged" if step is None else f"last step {step}"


def _describe(run) -> str:
    return f"{run.info.run_name} ({run.info.run_id})"


def cleanup(tracking_uri: str | None, experiment: str, dry_run: bool = False, out=None) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process is gone; the ids marked (or that would be)."""
    out = out or sys.stdout
    client, _ = open_store(tracking_uri)
    experiment = experiment_name(experiment)
    host = socket.gethostname()
    marked = []
    runs = running_runs(client, experiment)
    for run in runs:
        verdict = process_state(run.data.tags, host)
        if not verdict.gone:
            print(f"skipped: {_describe(run)}: {verdict.why}", file=out)
            continue
        if dry_run:
            step, _ = last_step(client, run.info.run_id)
            print(f"would mark FAILED: {_describe(run)}: {verdict.why}, {_step_text(step)}", file=out)
        else:
            step = mark_gone(client, run.info.run_id)
            print(f"marked FAILED: {_describe(run)}: {verdict.why}, {_step_text(step)}", file=out)
        marked.append(run.info.run_id)
    print(f"{len(runs)} RUNNING run(s) in {experiment!r}; {len(marked)} "
          f"{'would be ' if dry_run else ''}marked FAILED", file=out)
    return marked


def list_running(tracking_uri: str | None, experiment: str, out=None) -> None:
    out = out or sys.stdout
    client, _ = open_store(tracking_uri)
    experiment = experiment_name(experiment)
    host = socket.gethostname()
    runs = running_runs(client, experiment)
    for run in runs:
        verdict = process_state(run.data.tags, host)
        step, _ = last_step(client, run.info.run_id)
        state = "GONE" if verdict.gone else "ok"
        print(f"{state:4}  {_describe(run)}  step {'-' if step is None else step}  {verdict.why}", file=out)
    print(f"{len(runs)} RUNNING run(s) in {experiment!r}", file=out)


def sync_folder(folder: str, tracking_uri: str | None, out=None) -> None:
    from pathlib import Path

    from mnist_pipeline.tracking.sync import NOTHING, describe, sync

    out = out or sys.stdout
    path = Path(folder)
    if not path.is_dir():
        raise StoreError(f"no folder {folder}: pass a run's output folder (its `output_dir` tag)")
    from mnist_pipeline.tracking.spool import tracking_errors

    try:
        sent = sync(path, tracking_uri)
    except tracking_errors() as e:
        raise StoreError(f"the tracking server failed while the records of {folder} were sent "
                         f"({' '.join(str(e).split())[:300]}): run this again, nothing is sent twice") from None
    if sent is None:
        print(f"{folder}: {NOTHING}", file=out)
        return
    print(f"{folder}: sent {describe(sent)}", file=out)


def main(argv: list[str] | None = None, prog: str = "mnist runs") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the RUNNING runs, and whether their process is alive")
    add_store_args(listing)
    clean = commands.add_parser("cleanup", help="mark FAILED the RUNNING runs whose process is gone (this host)")
    add_store_args(clean)
    clean.add_argument("--dry-run", action="store_true", help="say what would be marked, change nothing")
    send = commands.add_parser("sync", help="send a run's records its server did not take, kept in its output folder")
    send.add_argument("folder", help="the run's output folder (the one with mlflow-unsent/)")
    send.add_argument("--tracking-uri", help="MLflow store (default: the one the run was trained against)")
    args = parser.parse_args(argv)
    try:
        if args.command == "sync":
            sync_folder(args.folder, args.tracking_uri)
        elif args.command == "cleanup":
            cleanup(args.tracking_uri, args.experiment, args.dry_run)
        else:
            list_running(args.tracking_uri, args.experiment)
    except StoreError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(prog="python -m mnist_pipeline.tracking.cleanup")
