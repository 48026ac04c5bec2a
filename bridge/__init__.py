"""fse-bridge: HL7 v2 over MLLP to the Regione Toscana FSE 2.0 gateway (CART v2)."""

__version__ = "0.1.0"
