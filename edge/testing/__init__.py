"""Helpers for testing code that runs on an edge device, shipped in the package (like
`gpiozero.testing`) so downstream users can test their own workers with them.

- `requirements`: skip-or-fail for missing programs and test data (`EDGE_REQUIRE_INTEGRATION=1`
  turns a skip into a failure, as CI does).
- `mosquitto`: a real mosquitto broker on a free 127.0.0.1 port.
- `waiting`: wait on a condition with a timeout, instead of sleeping and hoping.
- `pytest_plugin`: fixtures for all of the above (`-p edge.testing.pytest_plugin`).
"""
