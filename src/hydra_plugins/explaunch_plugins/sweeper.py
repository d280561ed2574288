"""The Hydra plugin class: thin, as Hydra's own launcher plugins are. The work is in :mod:`explaunch.launch.sweeper`."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class ExplaunchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.params: dict[str, str] = dict(settings.pop("params", None) or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Check ``hydra.sweeper.*`` and ``hydra.launcher.*`` (in any app: they are ours and the launchers' we know)
        and make the launcher; a bad setting ends here in one line, exit 2, before anything is created."""
        from explaunch.errors import ConfigError
        from explaunch.launch.preflight import check_settings
        from explaunch.launch.sweeper import config_error_exit

        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        try:
            check_settings(config)
            if OmegaConf.select(config, "hydra.sweeper.detach", default=False):
                from explaunch.launch.controller import check_detachable

                check_detachable(config)  # a launcher it cannot detach from: one line before anything is made
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            )
        except ConfigError as ex:
            config_error_exit(ex)
        except Exception as ex:  # Hydra wraps what the launcher raised
            if isinstance(ex.__cause__, ConfigError):
                config_error_exit(ex.__cause__)
            raise

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        """Run the sweep; return what Hydra's basic sweeper returns, the jobs' ``JobReturn`` in batches
        (:meth:`explaunch.launch.sweeper.SweepRunner.returns`). On any job not completed: the summary,
        ``on_multirun_end`` callbacks (Hydra would skip them), then exit 1 (130 when interrupted).

        With ``hydra.sweeper.detach=true``: check the sweep, start its controller (:mod:`explaunch.launch.controller`),
        say where it is and exit 0 at once; the controller runs this same method, not detached."""
        from explaunch.errors import ExplaunchError
        from explaunch.launch.settings import SweeperSettings
        from explaunch.launch.sweeper import SweepRunner, config_error_exit

        assert self.config is not None and self.hydra_context is not None
        settings = SweeperSettings.from_config(self.config.hydra.sweeper)
        runner = SweepRunner(
            settings, self.launcher, self.hydra_context.config_loader, self.config, task_function=self.task_function
        )
        params = {str(k): str(v) for k, v in self.params.items()}
        if settings.detach:
            from explaunch.launch.controller import detach

            try:
                detach(runner.plan, arguments, params, self.config, ours=runner.ours)
            except ExplaunchError as ex:  # a bad job, a folder in use, sbatch refusing: nothing was started
                config_error_exit(ex)
            raise SystemExit(0)  # the controller runs the sweep and its on_multirun_end callbacks
        from pathlib import Path

        from explaunch.launch.controller import SweepRun, launcher_name

        this_run = SweepRun.begin(Path(str(self.config.hydra.sweep.dir)), launcher_name(self.config))
        code = 1
        try:
            code = runner.run(arguments, params)
        except ExplaunchError as ex:  # a bad job config (explaunch's app), a sweep folder in use or not writable
            code = ex.exit_code
            config_error_exit(ex)
        except KeyboardInterrupt:
            code = 130
            raise
        finally:
            this_run.end(code)
        if code != 0:
            self.hydra_context.callbacks.on_multirun_end(config=self.config)
            raise SystemExit(code)
        return runner.returns()
