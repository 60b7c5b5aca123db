"""`edge faces ...` (known faces in the device's store, through the `edge.cli` entry point)
and the doorbell's simulator controls `edge sim press | camera | status` (drive a running
`edge run --sim`, through the `edge.sim` entry point).

`edge faces` works on the store directly, in this process (dlib is loaded here, never in
the runtime); a running device notices the change through the faces version row and
reloads without a restart. Enrollment shows its progress on stderr, one photo at a time.
Nothing prints an encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge.cli_device import CliDevice
from edge.store import StoreUnavailable
from services.doorbell.faces_store import FaceStore, check_name
from services.doorbell.snapshots import snapshot_folder


class Progress:
    """A one-line progress bar on stderr ("enrolling 3/5 obama_2.jpg [######....]"),
    redrawn in place on a terminal, one line per step otherwise (logs, CI)."""

    def __init__(self, total: int, stream=None, width: int = 20):
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()

    def step(self, done: int, label: str) -> None:
        filled = self.width * done // max(1, self.total)
        line = f"enrolling {done + 1}/{self.total} {label} [{'#' * filled}{'.' * (self.width - filled)}]"
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        self.stream.flush()

    def done(self, message: str) -> None:
        """The bar full (every photo looked at), and the outcome."""
        line = f"{message} [{'#' * self.width}]"
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()


def cmd_enroll(args) -> int:
    # Imported here, not at the top: OpenCV and the recognition module would slow down
    # every `edge` command, which all load this module to list their subcommands.
    from services.doorbell.enrollment import encode_photo, photo_source
    from services.doorbell.face_library import RecognitionUnavailable
    from services.doorbell.recognition import EnrollmentError

    try:
        name = check_name(args.name)
    except ValueError as exc:
        print(f"edge faces enroll: {exc}", file=sys.stderr)
        return 2
    photos = [Path(p) for p in args.photos]
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        print(f"edge faces enroll: no such photo: {', '.join(missing)}; give paths to JPEG or PNG files",
              file=sys.stderr)
        return 2
    device = CliDevice(args)
    min_face_px = device.config["faces"].min_face_px
    progress = Progress(len(photos))
    accepted, rejected = [], []
    for i, photo in enumerate(photos):
        progress.step(i, photo.name)
        try:
            accepted.append((photo_source(photo), encode_photo(photo, min_face_px=min_face_px)))
        except EnrollmentError as exc:
            rejected.append(str(exc))  # names the photo
        except RecognitionUnavailable as exc:
            progress.done("enrollment stopped")
            print(f"edge faces enroll: {exc}", file=sys.stderr)
            return 1
    progress.done(f"encoded {len(accepted)} of {len(photos)} photo(s)")
    for line in rejected:
        print(f"rejected: {line}", file=sys.stderr)
    if not accepted:
        print(f"nothing enrolled for {name}: every photo was rejected", file=sys.stderr)
        return 1
    store = device.open_store()
    try:
        faces = FaceStore(store)
        added, duplicates = faces.add(name, accepted, time.time())
        if added:
            device.audit(store, "face_enrolled", {"name": name, "source": "photos", "photos": added})
    except StoreUnavailable as exc:
        print(f"edge faces enroll: cannot save ({exc})", file=sys.stderr)
        return 1
    finally:
        store.close()
    note = f" ({duplicates} already enrolled)" if duplicates else ""
    print(f"enrolled {name}: {added} photo(s){note}; a running doorbell uses them from its next ring "
          f"({device.describe()})")
    return 1 if rejected else 0


def cmd_list(args) -> int:
    device = CliDevice(args)
    store = device.open_store()
    try:
        people = FaceStore(store).people()
    finally:
        store.close()
    if not people:
        print(f"no one is enrolled yet on {device.describe()}; add someone with `edge faces enroll NAME PHOTO...`")
        return 0
    width = max(len("NAME"), *(len(p.name) for p in people))
    print(f"{'NAME':<{width}}  PHOTOS  ENROLLED")
    for p in people:
        print(f"{p.name:<{width}}  {p.photos:>6}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(p.last_wall))}")
    return 0


def cmd_remove(args) -> int:
    device = CliDevice(args)
    config = device.config
    store = device.open_store()
    try:
        faces = FaceStore(store)
        enrolled = any(p.name == args.name for p in faces.people())
        files = faces.snapshot_files(args.name)
        if not enrolled and not files:
            known = ", ".join(p.name for p in faces.people()) or "nobody"
            print(f"edge faces remove: no one named {args.name!r} is enrolled (enrolled: {known}); "
                  f"see `edge faces list`", file=sys.stderr)
            return 1
        # The files first, then the rows: a snapshot that cannot be deleted keeps its row,
        # so running the command again finds it and tries again.
        deleted, failed = snapshot_folder(config["faces"], device.state_dir).remove(files)
        removed, _ = faces.remove(args.name, keep_files=failed)
        device.audit(store, "face_removed", {"name": args.name, "photos": removed, "snapshots": deleted,
                                                  "snapshots_not_deleted": len(failed)})
    except StoreUnavailable as exc:
        print(f"edge faces remove: cannot save ({exc})", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"removed {args.name}: {removed} photo(s) and {deleted} snapshot(s) showing them "
          f"({device.describe()})")
    for name, reason in sorted(failed.items()):
        print(f"edge faces remove: cannot delete the snapshot {name} ({reason}); check the permissions of "
              f"the snapshot folder and run `edge faces remove {args.name}` again", file=sys.stderr)
    return 1 if failed else 0


def _subcommand(sub, add_device_args, name: str, func, help: str, **defaults) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    add_device_args(p)
    p.set_defaults(func=func, **defaults)
    return p


def register_faces(subparsers, add_device_args) -> None:
    p = subparsers.add_parser("faces", help="known faces: enroll, list, remove",
                              description="known faces: enroll, list, remove")
    sub = p.add_subparsers(dest="faces_command", required=True)
    enroll = _subcommand(sub, add_device_args, "enroll", cmd_enroll, "enroll a person from photos (one face each)")
    enroll.add_argument("name", help="the name announced when this person rings")
    enroll.add_argument("photos", nargs="+", metavar="PHOTO", help="photos showing only this person's face")
    _subcommand(sub, add_device_args, "list", cmd_list, "list enrolled people")
    remove = _subcommand(sub, add_device_args, "remove", cmd_remove, "forget a person and delete the snapshots "
                         "showing them")
    remove.add_argument("name", help="the enrolled person's name, as `edge faces list` shows it")


# -- edge sim -----------------------------------------------------------------------------------

def cmd_sim_press(args) -> int:
    return CliDevice(args).post_sim("press", {"hold": args.hold})


SIM_CAMERA_ACTIONS = ("show", "empty", "unplug", "plug", "fault")
SIM_CAMERA_FAULTS = ("black", "frozen", "slow", "none")  # hardware.camera.FAULTS, and "none" to clear


def cmd_sim_camera(args) -> int:
    payload = {"action": args.action}
    if args.action == "show":
        if not args.value:
            print("edge sim camera show: which photo? for example: edge sim camera show ~/alice.jpg",
                  file=sys.stderr)
            return 2
        photo = Path(args.value).expanduser().resolve()
        if not photo.is_file():
            print(f"edge sim camera show: no such photo {photo}", file=sys.stderr)
            return 2
        payload["path"] = str(photo)  # the device runs elsewhere: give it an absolute path
    elif args.action == "fault":
        if args.value not in SIM_CAMERA_FAULTS:
            print(f"edge sim camera fault: which fault? one of {', '.join(SIM_CAMERA_FAULTS)}, for example: "
                  f"edge sim camera fault black (\"none\" clears it)", file=sys.stderr)
            return 2
        payload["fault"] = args.value
    return CliDevice(args).post_sim("camera", payload)


def cmd_sim_status(args) -> int:
    device = CliDevice(args)
    if args.json:
        return device.post_sim("status", {})
    code, body = device.request("POST", "/sim/status", {})
    if code != 200:
        print(f"edge sim status: {body.get('error', code)}", file=sys.stderr)
        return 1
    for label, value in status_rows(body["result"]):
        print(f"{label + ':':<14}{value}")
    return 0


def status_rows(status: dict) -> list[tuple[str, str]]:
    """`edge sim status` for a person: one line per part of the simulated doorbell."""
    def on(flag) -> str:
        return "on" if flag else "off"
    gpio, camera, recognition = status.get("gpio") or {}, status.get("camera"), status.get("recognition")
    last = status.get("last_visitor")
    rows = [("button", "pressed" if gpio.get("button") else "released"),
            ("outputs", f"chime {on(gpio.get('chime'))}, relay {on(gpio.get('relay'))}, led {on(gpio.get('led'))}")]
    if camera is None:
        rows.append(("camera", "none configured"))
    else:
        showing = Path(camera["showing"]).name if camera.get("showing") else "an empty porch"
        state = "open" if camera.get("open") else f"unavailable ({camera.get('error')})"
        rows.append(("camera", f"{state}; {'plugged' if camera.get('plugged') else 'unplugged'}, fault "
                               f"{camera.get('fault') or 'none'}, showing {showing}"))
    rows.append(("recognition", "off" if recognition is None else
                 f"ready (pid {recognition.get('pid')})" if recognition.get("available") else
                 f"unavailable ({recognition.get('reason')})"))
    rows.append(("rings", f"{status.get('rings')} ({status.get('presses')} presses, {status.get('ignored')} "
                          f"within the cooldown)"))
    rows.append(("last visitor", "nobody yet" if not last else
                 f"{last['visitor']} ({last['result']}) at {last['time']}, event {last['event_id']}"))
    return rows


def register_sim(sub, add_device_args) -> None:
    """The doorbell's controls directly under `edge sim` (it is the device's first job).
    `edge sim` always talks to the simulator: --sim is implied."""
    press = _subcommand(sub, add_device_args, "press", cmd_sim_press, "press the doorbell button", sim=True)
    press.add_argument("--hold", type=float, default=0.1, metavar="SECONDS",
                       help="how long to hold it (a long press from [doorbell] long_press_s)")
    camera = _subcommand(sub, add_device_args, "camera", cmd_sim_camera, "what the simulated camera sees: "
                         "show PHOTO, empty, unplug, plug, fault black|frozen|slow|none", sim=True)
    camera.add_argument("action", choices=SIM_CAMERA_ACTIONS)
    camera.add_argument("value", nargs="?", metavar="PHOTO|FAULT",
                        help="with show: the photo the camera serves until told otherwise; with fault: black "
                             "(all-black frames), frozen (the same frame over and over), slow (2 s per frame) "
                             "or none")
    status = _subcommand(sub, add_device_args, "status", cmd_sim_status, "the simulated doorbell: outputs, "
                         "camera, recognition, last visitor", sim=True)
    status.add_argument("--json", action="store_true", help="the raw status as JSON, for scripts")
