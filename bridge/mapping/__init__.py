"""From a parsed message to the neutral report: routing, mapping tables, the mapper."""
