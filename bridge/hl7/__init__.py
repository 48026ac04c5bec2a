"""HL7 v2: parsing, charsets and batches; the field reader; ACKs."""
