"""Which rank a failed multi-process run blames, with real processes and no torch: a stand-in
launcher starts two ranks that install the ranks' SIGTERM marker
(``chatpgt.training.distributed.mark_stop_on_sigterm``), and the test plays torchrun's part.

Under load, torchrun stops the surviving rank (SIGTERM) before the worker's watcher looks again:
both ranks are gone at once, and the run used to blame rank 0, the rank the launcher stopped,
instead of rank 1, which was killed (tests/test_training_ddp.py, issue 20)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from chatpgt.training.distributed import failure_reason, watch

RANK = """
import os, sys, time
from pathlib import Path
from chatpgt.training.distributed import mark_stop_on_sigterm
mark_stop_on_sigterm(Path(sys.argv[1]), os.environ["RANK"])
(Path(sys.argv[1]) / f"rank-{os.environ['RANK']}.up").touch()
time.sleep(120)
"""
LAUNCHER = """
import os, subprocess, sys, time
argv = [sys.executable, "-c", sys.argv[2], sys.argv[1]]
ranks = [subprocess.Popen(argv, env={**os.environ, "RANK": str(r)}) for r in range(2)]
for rank in ranks:
    rank.wait()
time.sleep(1.5)  # a launcher that takes its time to exit after its ranks
sys.exit(1)
"""


def _launch(launch_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(launch_dir), RANK], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not all((launch_dir / f"rank-{r}.up").exists() for r in range(2)):
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.05)
    return proc


def _ranks(proc: subprocess.Popen[bytes]) -> dict[str, psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    return {c.environ()["RANK"]: c for c in children if "RANK" in c.environ()}


def test_the_rank_that_died_is_blamed_not_the_one_the_launcher_stopped(tmp_path: Path) -> None:
    proc = _launch(tmp_path)
    ranks = _ranks(proc)
    found: list[str | None] = []
    watcher = threading.Thread(
        target=lambda: found.append(watch(proc, 2, tmp_path, stop=lambda: False))
    )
    watcher.start()
    try:
        time.sleep(0.6)  # the watcher has seen both ranks
        # The worst order for the watcher: the stopped rank is gone first, and is all it sees.
        ranks["0"].send_signal(signal.SIGTERM)
        ranks["0"].wait(timeout=30)
        time.sleep(0.6)
        assert (tmp_path / "rank-0.stopped").exists()
        ranks["1"].send_signal(signal.SIGKILL)
        watcher.join(timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert found and found[0] is not None and found[0].startswith("rank 1 (pid"), found
    assert found[0].endswith("died")
    reason = failure_reason(tmp_path, found[0], proc.returncode, 2)
    assert reason.startswith("rank 1 (pid") and "rank 0" not in reason.split("\n")[0], reason


def test_after_the_launcher_exits_the_unmarked_rank_is_blamed(tmp_path: Path) -> None:
    """The watcher saw nothing (the launcher was quicker): the markers decide."""
    (tmp_path / "rank-0.stopped").touch()
    reason = failure_reason(tmp_path, None, 1, 2)
    assert reason.startswith("rank 1 died"), reason
    (tmp_path / "rank-2.error").write_text("RuntimeError: Connection closed by peer")
    reason = failure_reason(tmp_path, None, 1, 3)
    assert reason.startswith("rank 1 died") and "Then rank-2 failed" in reason, reason
