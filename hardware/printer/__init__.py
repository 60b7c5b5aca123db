"""3D printers on a serial port: the port itself (`port.py`, any pyserial URL) and the
simulated Marlin firmware on a pseudo-terminal that the simulator and the tests use
(`simulated_marlin.py`)."""

from hardware.printer.port import PortGone, SerialPort
from hardware.printer.simulated_marlin import SimulatedMarlin

__all__ = ["PortGone", "SerialPort", "SimulatedMarlin"]
