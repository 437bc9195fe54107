"""The xdist scheduler of the pytest plugin: xdist's ``load`` distribution, except that the steps of
one (variant, repeat) stay on one worker, since they are the results of one run.

`LoadScopeScheduling` groups tests by what ``_split_scope`` returns (xdist's own ``loadfile``
scheduler is the same override); here a scenario step's scope is its (variant, repeat) collector
and every other test is its own scope, so those are scheduled one by one, as by ``load``. Imported
only when xdist asks for a scheduler.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

from harness.scenario.yamlsafe import SUFFIXES as YAML_SUFFIXES


class ScenarioScheduling(LoadScopeScheduling):
    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if path.endswith(YAML_SUFFIXES) and nodeid.count("::") >= 2:
            return nodeid.rsplit("::", 1)[0]  # scenario.yaml::<variant>[-r<N>]
        return nodeid
