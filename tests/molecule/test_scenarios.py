"""The molecule scenarios under molecule/ that do not serve with the real vLLM (scenario_support.py runs each)."""

from __future__ import annotations

import pytest
from scenario_support import SCENARIOS, SERVING, run_scenario


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name not in SERVING])
def test_molecule_scenario(scenario):
    run_scenario(scenario)
