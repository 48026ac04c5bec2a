"""The CART v2 gateway: tokens, request bodies and the client (gateway.md)."""

from bridge.gateway.bodies import Submission
from bridge.gateway.client import (CallInfo, GatewayClient, GatewayResult, OutcomeClass, classify,
                                   reactor_sleep)
from bridge.gateway.tokens import TokenIdentity, build_tokens

__all__ = ["CallInfo", "GatewayClient", "GatewayResult", "OutcomeClass", "Submission",
           "TokenIdentity", "build_tokens", "classify", "reactor_sleep"]
