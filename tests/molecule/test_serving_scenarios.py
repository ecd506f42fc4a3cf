"""The molecule scenarios that serve with the real vLLM's CPU build, longest first (scenario_support.py runs each).

A file of their own, so that scripts/test.sh's two xdist workers (--dist loadfile) run them on one worker while
the other runs the rest of the tests.
"""

from __future__ import annotations

import pytest
from scenario_support import SCENARIOS, SERVING, run_scenario


def test_every_serving_scenario_exists():
    assert set(SERVING) <= set(SCENARIOS), "scenario_support.SERVING names scenarios molecule/ does not have"


@pytest.mark.parametrize("scenario", SERVING)
def test_molecule_scenario(scenario):
    run_scenario(scenario)
