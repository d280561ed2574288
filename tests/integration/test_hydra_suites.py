"""Hydra's own test suites for launchers and sweepers, run with ``hydra/sweeper=explaunch``: any Hydra app may use
explaunch's sweeper, and gets what Hydra's basic sweeper gives (its config errors, its ``JobReturn`` batches); and
with explaunch's launcher, ``hydra/launcher=explaunch_local``, under Hydra's basic sweeper (its public ``launch``)
and under explaunch's sweeper (which streams the jobs it composed)."""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite

pytestmark = [
    pytest.mark.slow,
    # Hydra's suites expect Hydra's process-wide singletons (the version base, the config store) as a fresh process
    # has them; our other tests set them (version_base 1.3, explaunch's configs): `make test` runs them on their own
    pytest.mark.hydra_suites,
    # Hydra's test apps (hydra.test_utils) compose without a version_base (Hydra 1.1's defaults): Hydra warns that a
    # future version will not change the job's working directory, as it does for any such app and any sweeper.
    pytest.mark.filterwarnings("ignore:Future Hydra versions will no longer change working directory:UserWarning"),
]


@pytest.mark.parametrize("launcher_name, overrides", [(n, ["hydra/sweeper=explaunch"]) for n in ("basic", "joblib")])
class TestSweeperWithLaunchers(LauncherTestSuite):
    pass


_LOCAL_LAUNCHER = [
    pytest.param("explaunch_local", [], id="basic_sweeper"),
    pytest.param("explaunch_local", ["hydra.launcher.n_jobs=1"], id="basic_sweeper-in_process"),
    pytest.param("explaunch_local", ["hydra/sweeper=explaunch"], id="explaunch_sweeper"),
]


@pytest.mark.parametrize("launcher_name, overrides", _LOCAL_LAUNCHER)
class TestLocalLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides", [("basic", ["hydra/sweeper=explaunch", "hydra.sweeper.max_batch_size=2"])]
)
class TestBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [
        pytest.param("explaunch_local", ["hydra.sweeper.max_batch_size=2"], id="basic_sweeper"),
        pytest.param(
            "explaunch_local", ["hydra/sweeper=explaunch", "hydra.sweeper.max_batch_size=2"], id="explaunch_sweeper"
        ),
    ],
)
class TestLocalLauncherBatched(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/sweeper": "explaunch"}, {"override hydra/launcher": "basic"}]}, ["-m"])],
)
class TestIntegration(IntegrationTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param({"defaults": [{"override hydra/launcher": "explaunch_local"}]}, ["-m"], id="basic_sweeper"),
        pytest.param(
            {"defaults": [{"override hydra/sweeper": "explaunch"}, {"override hydra/launcher": "explaunch_local"}]},
            ["-m"],
            id="explaunch_sweeper",
        ),
    ],
)
class TestLocalLauncherIntegration(IntegrationTestSuite):
    pass
