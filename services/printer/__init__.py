"""The 3D printer worker: Marlin G-code over a serial port. marlin.py (the protocol, pure),
sender.py (the link's own thread), jobs.py (files, read-ahead, checkpoints), worker.py (the
connection's life, jobs, Home Assistant), and the config, commands, CLI, control socket and
simulator controls beside them."""
