"""The embedded default gateway: a strict CART v2 simulator (gateway.md sections 7, 8)."""

from bridge.simulator.server import Fault, GatewaySimulator, SimulatorHandle, start_simulator

__all__ = ["Fault", "GatewaySimulator", "SimulatorHandle", "start_simulator"]
