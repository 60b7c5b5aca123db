"""Hardware abstraction: one small interface per device class (camera, GPIO, serial link),
with the real backends and the fakes used by the simulator and the tests side by side.
Devices never know which backend runs them; configuration chooses it."""
