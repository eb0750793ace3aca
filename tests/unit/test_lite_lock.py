"""Whether another process holds a Milvus Lite file is read from the kernel's lock table, without
opening the lock file (milvus-lite 2.5.1 deletes the lock file when a second process fails to open
the database, and closing a descriptor would drop this process's own locks)."""

from __future__ import annotations

import fcntl
import subprocess
import sys

from gateway.backends.milvus.connection import lite_file_held

HOLD = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True);"
        " time.sleep(60)")


def test_a_lock_another_process_holds_counts_and_this_processs_own_does_not(tmp_path):
    database = tmp_path / "images.db"
    lock = tmp_path / ".images.db.lock"
    assert not lite_file_held(str(database))  # no lock file
    with open(lock, "a") as mine:
        fcntl.lockf(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not lite_file_held(str(database))  # ours
        fcntl.lockf(mine, fcntl.LOCK_UN)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert lite_file_held(str(database)) and lock.exists()
    finally:
        holder.kill()
        holder.wait()
    assert not lite_file_held(str(database))
