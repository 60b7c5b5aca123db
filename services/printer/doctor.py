"""`edge doctor`'s check of the printer on an installed device: the configured serial port
exists (a by-id path vanishes when the printer is off or unplugged) and the job folder can be
written. The port is not opened: the running device holds it (exclusively), and opening it
would reset many boards mid-print.

Not responsible for: the printer itself (worker.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.doctor import FAIL, OK, SKIP, WARN, Check, guarded


def _port(cfg) -> Check:
    url = cfg.port
    if not url:
        return Check("printer", "serial port", SKIP, "no port: the simulated printer (edge run --sim)")
    if "://" in url:
        return Check("printer", "serial port", SKIP, f"{url} is reached over the network; `edge printer status` "
                     f"shows whether it answers")
    path = Path(url)
    if not path.exists():
        return Check("printer", "serial port", FAIL, f"{url} does not exist",
                     "switch the printer on and plug it in; `ls /dev/serial/by-id/` lists the ports, put the "
                     "printer's into [printer] port")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("printer", "serial port", FAIL, f"{url} exists but cannot be opened for reading and writing",
                     "add the device's user to the dialout group (sudo usermod -aG dialout edge)")
    return Check("printer", "serial port", OK, f"{url} is present ({path.resolve()})")


def _jobs_dir(cfg) -> Check:
    folder = Path(cfg.jobs_dir) if cfg.jobs_dir else None
    if folder is None:
        return Check("printer", "job folder", SKIP, "the default under the state directory")
    if not folder.exists():
        return Check("printer", "job folder", WARN, f"{folder} does not exist yet", "the worker creates it on start")
    if not os.access(folder, os.W_OK):
        return Check("printer", "job folder", FAIL, f"{folder} is not writable",
                     f"chown it to the device's user (sudo chown edge: {folder})")
    return Check("printer", "job folder", OK, f"{folder} is writable")


def checks(config) -> list[Check]:
    cfg = config["printer"]
    return [guarded("printer", "serial port", lambda: _port(cfg)),
            guarded("printer", "job folder", lambda: _jobs_dir(cfg))]
