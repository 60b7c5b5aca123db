"""A process that writes events to the store in a loop and prints the id of each commit
after it returns: the crash test kills it with SIGKILL and checks every printed id is there.
Run as `python -m edge.testing.store_writer DB_PATH`."""

import sys
from pathlib import Path

from edge.store import Store

if __name__ == "__main__":
    store = Store(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        row = store.record_event(f"ev{n}", "test.write", {"n": n, "pad": "x" * 200})
        print(row, flush=True)
