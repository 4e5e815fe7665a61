"""Hydra's own launcher/sweeper test suites, run against llem's plugins exactly as Hydra's official
launchers run them (hydra-joblib-launcher's and hydra-submitit-launcher's tests, Hydra's
tests/test_basic_launcher.py), on Hydra's example apps (`hydra.test_utils.a_module`, configs in
`hydra/test_utils/configs`), which have none of llem's schema.

On such an app llem's launcher is a plain process-per-job launcher: every job in a fresh process, the
child's own JobReturn trusted, nothing of llem's (gaps, study settings, result.json, manifest) written
into the app's folders. llem's sweeper refuses such an app with one line (its plans are llem studies);
Hydra's BasicSweeper batches with `hydra.sweeper.max_batch_size` in front of llem's launcher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.core.utils import JobStatus
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _hydra_as_in_a_fresh_process(hydra_restore_singletons: None) -> None:
    """Hydra's suites expect its defaults as in their own process: no version_base chosen yet (so jobs
    chdir into their folder, as version_base 1.1 does). Other tests in this pytest process compose llem's
    app with version_base=None, which Hydra keeps in a singleton; forget it here (restored afterwards)."""
    from hydra import version
    from hydra.core.singleton import Singleton

    Singleton._instances.pop(version.VersionBase, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("launcher_name, overrides", [("llem", [])])
class TestLlemLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {},
            ["-m", "hydra/launcher=llem", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"],
            id="llem_launcher_multirun",
        )
    ],
)
class TestLlemLauncherIntegration(IntegrationTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides", [("llem", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"])]
)
class TestBasicSweeperBatchingWithLlemLauncher(BatchedSweeperTestSuite):
    pass


def _pid_and_torch(cfg: Any) -> Any:
    return os.getpid(), "torch" in sys.modules


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_plain_app_gets_fresh_processes_its_own_job_returns_and_no_llem_files(
        hydra_sweep_runner: Any, tmp_path: Path) -> None:
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module",
                               task_function=_pid_and_torch, config_path="configs", config_name="compose.yaml",
                               overrides=["hydra/launcher=llem", "+a=0,1,2"], temp_dir=tmp_path)
    with sweep:
        assert sweep.returns is not None
        rets = sweep.returns[0]
        assert [r.status for r in rets] == [JobStatus.COMPLETED] * 3
        pids = [r.return_value[0] for r in rets]
        assert len(set(pids)) == 3 and os.getpid() not in pids  # a fresh process per job
        assert [r.return_value[1] for r in rets] == [False] * 3  # nothing of llem's preloaded (no torch)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert not [p for p in written if p.endswith(("result.json", "manifest.json", "plan.json"))], written


def _raise_key_error(cfg: Any) -> Any:
    raise KeyError("boom")


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_plain_apps_failing_task_raises_its_own_exception(hydra_sweep_runner: Any, tmp_path: Path) -> None:
    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module",
                               task_function=_raise_key_error, config_path="configs", config_name="compose.yaml",
                               overrides=["hydra/launcher=llem"], temp_dir=tmp_path)
    with pytest.raises(KeyError, match="boom"), sweep:
        pass  # BasicSweeper reads each JobReturn's return_value: the child's own KeyError


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_llems_sweeper_refuses_a_plain_app_in_one_line(hydra_sweep_runner: Any, tmp_path: Path) -> None:
    from llem.study.plan import StudyError

    sweep = hydra_sweep_runner(calling_file=None, calling_module="hydra.test_utils.a_module",
                               task_function=_pid_and_torch, config_path="configs", config_name="compose.yaml",
                               overrides=["hydra/sweeper=llem", "hydra/launcher=llem", "+a=0,1"], temp_dir=tmp_path)
    with pytest.raises(StudyError, match=r"^llem's sweeper \(hydra/sweeper=llem\) plans studies of llem's own app.*"
                                         r"use hydra/sweeper=basic") as e, sweep:
        pass
    assert "\n" not in str(e.value)
