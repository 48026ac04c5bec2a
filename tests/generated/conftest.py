"""Hypothesis profiles of the generated-message tests, and the stages they run through.

"ci" (the default) runs a bounded number of examples per document type;
"generated-many" runs many more (FSE_GENERATED_PROFILE=generated-many, or
bench/bench_generated.py for a report by stage and dimension). The profiles
are applied to these tests only: loading one globally would change every
other Hypothesis test of the suite.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from .pipeline import make_stages

# Pages of text per example are expected: no time limit, no "too slow" / "too large" checks.
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
# No shrinking: each example runs the whole pipeline (seconds), so shrinking a failing report of
# pages would take many minutes; the failing message is printed whole instead.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
settings.register_profile("ci", max_examples=6, deadline=None, suppress_health_check=_SLOW, phases=_PHASES)
settings.register_profile("generated-many", max_examples=200, deadline=None, suppress_health_check=_SLOW,
                          phases=_PHASES)

PROFILE = os.environ.get("FSE_GENERATED_PROFILE", "ci")


@pytest.fixture(scope="session")
def stages(tmp_path_factory):
    return make_stages(tmp_path_factory.mktemp("pki"))
