import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gateway_kit import *  # noqa: E402,F401,F403  (fixtures shared by tests/gateway and tests/simulator)
