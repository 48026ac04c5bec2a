"""MLLP: framing and the Twisted protocol (step 1, receive)."""
