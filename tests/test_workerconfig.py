"""Our worker processes' Dask settings: the profiler off unless the user's config says
otherwise (saxs_pipeline.plugins.workerconfig says why)."""

from __future__ import annotations

import dask
import distributed  # noqa: F401  (its defaults in dask's config, as in every real use)
import pytest

from saxs_pipeline.plugins.workerconfig import (
    PROFILE_KEY,
    WORKER_ENVIRON,
    profile_enabled,
    worker_config,
)


@pytest.fixture(autouse=True)
def no_user_profile_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine's own dask config must not decide these tests
    monkeypatch.delenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", raising=False)
    # a nanny prefers these from os.environ over its config, and every LocalCluster an
    # earlier test started left Dask's defaults there (its nannies set them in-process)
    for name in WORKER_ENVIRON:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(dask.config, "paths", [])


def test_profiler_off_and_allocator_environment_by_default() -> None:
    settings = worker_config()
    assert settings[PROFILE_KEY] is False
    for name, value in WORKER_ENVIRON.items():
        assert settings[f"distributed.nanny.pre-spawn-environ.{name}"] == value
    with dask.config.set(settings):
        assert dask.config.get(PROFILE_KEY) is False


def test_the_users_dask_config_turns_it_back_on(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    assert profile_enabled() is True
    monkeypatch.delenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED")
    (tmp_path / "dask.yaml").write_text("distributed:\n  worker:\n    profile:\n      enabled: true\n")
    monkeypatch.setattr(dask.config, "paths", [str(tmp_path)])
    assert profile_enabled() is True


def test_a_value_set_in_the_process_is_kept() -> None:
    with dask.config.set({PROFILE_KEY: "sometimes"}):  # not Dask's default: someone's choice
        assert profile_enabled() == "sometimes"


@pytest.mark.timeout(120)
def test_the_embedded_clusters_workers_run_without_the_profiler() -> None:
    from saxs_pipeline.pipeline.cluster import ClusterLink

    before = dask.config.get(PROFILE_KEY)
    link = ClusterLink(threads=1).start(wait=True)
    try:
        client = link.get()
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
        environ = client.run(lambda: {k: __import__("os").environ.get(k) for k in WORKER_ENVIRON})
    finally:
        link.close()
    assert list(profiling.values()) == [False]
    assert list(environ.values()) == [WORKER_ENVIRON]
    assert dask.config.get(PROFILE_KEY) == before  # this process's config is left as it was


def test_the_embedded_cluster_ticks_less_often_unless_the_user_says(tmp_path, monkeypatch) -> None:
    """The driver's idle CPU (saxs_pipeline.pipeline.cluster says why); a user's value of
    one of these keys wins."""
    from saxs_pipeline.pipeline.cluster import embedded_cluster_config

    settings = embedded_cluster_config()
    assert settings["distributed.admin.tick.interval"] == "200ms"
    assert settings["distributed.admin.system-monitor.interval"] == "2s"
    assert settings[PROFILE_KEY] is False
    (tmp_path / "dask.yaml").write_text("distributed:\n  admin:\n    tick:\n      interval: 20ms\n")
    monkeypatch.setattr(dask.config, "paths", [str(tmp_path)])
    assert "distributed.admin.tick.interval" not in embedded_cluster_config()
