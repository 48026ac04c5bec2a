"""`twist fse-bridge --config FILE.toml`: the service as a Twisted plug-in (interface.md)."""

from twisted.application.service import ServiceMaker

fse_bridge = ServiceMaker("fse-bridge", "bridge.service.tap",
                          "HL7 v2 (MLLP) to FSE 2.0 bridge", "fse-bridge")
