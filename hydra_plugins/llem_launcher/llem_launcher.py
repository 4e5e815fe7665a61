"""llem's Hydra launcher: `hydra/launcher=llem` (the default in llem's conf/config.yaml).

A thin adapter, as Hydra's joblib and submitit launchers are: `LlemLauncherConf` (its knobs: the
fields of `llem.launch.settings.LaunchSettings`, declared once there), and `LlemLauncher`, which
composes each job's config, pickles Hydra's own `run_job` call for it and hands it to
`llem.launch.supervisor.Supervisor` (one fresh process per job; timeouts, health checks, slots).

What a study adds (manifest, folder lock, gaps, hashes) comes through one documented contract,
`llem.launch.contract.StudyHooks`: llem's sweeper hands its hooks to the launcher (`attach`); without
them the launcher asks `llem.study.hooks.for_config`: llem's study for llem's app (also under Hydra's
basic sweeper or Optuna), a plain process-per-job launcher for any other Hydra app (its bookkeeping in
a private scratch folder; it passes Hydra's launcher test suites, tests/properties/test_hydra_suites.py).

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside
sys.modules, where dataclasses cannot resolve string annotations.
"""

import atexit
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from llem.launch.settings import LaunchSettings


@dataclass
class LlemLauncherConf(LaunchSettings):
    """llem's launcher: every knob is a field of LaunchSettings (docs/launcher.md "Launcher settings")."""

    _target_: str = "hydra_plugins.llem_launcher.llem_launcher.LlemLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="llem", node=LlemLauncherConf, provider="llem")


class LlemLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = {k: v for k, v in settings.items() if not k.startswith("_")}
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self.hooks: Any = None  # llem.launch.contract.StudyHooks: attached by a sweeper, else for_config
        self._configs: dict[int, Any] = {}  # job num -> (overrides, job_dir, job name) for JobReturns
        self._fork_server: Any = None  # llem.launch.zygote.ForkServer while a sweep uses it
        self.held = False  # a sweeper holds the zygote across launch() calls and calls close()

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def attach(self, hooks: Any) -> None:
        """The contract with the sweeper above (llem.launch.contract.StudyHooks)."""
        self.hooks = hooks

    def study_hooks(self) -> Any:
        if self.hooks is None:
            from llem.study.hooks import for_config

            assert self.config is not None
            self.hooks = for_config(self.config)
        return self.hooks

    def launch_settings(self) -> LaunchSettings:
        """hydra.launcher.*, checked (raises ConfigError)."""
        return LaunchSettings.resolve(self.settings)

    def prestart(self) -> None:
        """Start the zygote's imports now, in the background, and keep it for every launch() until
        close(): llem's sweeper calls this once the study may start (not for a dry run), so the imports
        overlap planning. Bad settings are reported by launch()."""
        from llem.errors import ConfigError

        self.held = True
        with contextlib.suppress(ConfigError):
            self._zygote(self.launch_settings())

    def _zygote(self, settings: LaunchSettings) -> Any:
        from hydra_plugins.llem_launcher import _core
        from llem.launch.zygote import ForkServer, wanted

        if self._fork_server is None and wanted(settings.fresh_process):
            preload = self.study_hooks().preload
            self._fork_server = ForkServer(preload=_core.PLAIN_PRELOAD if preload == () else preload).start()
            atexit.register(self._fork_server.close)
        return self._fork_server

    def close(self) -> None:
        """Stop the zygote (its jobs are done) and drop the hold; safe to call more than once."""
        self.held = False
        server, self._fork_server = self._fork_server, None
        if server is not None:
            server.close()
            atexit.unregister(server.close)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.llem_launcher import _core

        return _core.launch(self, job_overrides, initial_job_idx)
