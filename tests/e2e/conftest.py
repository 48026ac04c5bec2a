"""Servers shared by the end-to-end tests: started once per session, stopped cleanly (exit 0)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from .e2e_kit import Bridge, install_rules


@pytest.fixture(scope="session")
def rules_dir(tmp_path_factory):
    """The official XSD and schematrons, installed once with `fse-bridge rules install`."""
    return install_rules(tmp_path_factory.mktemp("rules") / "rules")


def _serve(bridge: Bridge):
    bridge.start()
    try:
        yield bridge
    finally:
        code = bridge.stop()
        assert code == 0, bridge.log()[-4000:]


@pytest.fixture(scope="session")
def plain_bridge(tmp_path_factory):
    """The embedded default without validation rules (validation OFF), fast gateway retries."""
    yield from _serve(Bridge(tmp_path_factory.mktemp("plain")))


@pytest.fixture(scope="session")
def validating_bridge(tmp_path_factory, rules_dir):
    """The embedded default with the official rules installed (local and simulator validation)."""
    yield from _serve(Bridge(tmp_path_factory.mktemp("validating"), rules_dir=rules_dir))


@pytest.fixture
def bridge(plain_bridge):
    """The plain bridge, with no scripted gateway fault left over by a test."""
    plain_bridge.clear_faults()
    yield plain_bridge
    plain_bridge.clear_faults()


_counter = itertools.count(1)


@pytest.fixture
def unique():
    """A factory of unique accessions and control ids (the servers are shared by many tests)."""
    run = uuid.uuid4().hex[:6].upper()

    def make(prefix: str) -> str:
        return f"{prefix}{run}{next(_counter):03d}"

    return make
