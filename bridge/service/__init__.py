"""The running service: the Twisted tap, the receiver, worker processes."""
