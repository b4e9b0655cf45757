"""The project's MLflow store appears complete or not at all (issue 14; environment.prepare_mlflow_store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignloop.pipeline import environment


def test_an_interrupted_store_creation_leaves_no_store_and_the_next_one_works(tmp_path: Path, monkeypatch) -> None:
    import mlflow.store.db.utils as db_utils

    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    real = db_utils._initialize_tables

    def killed_halfway(engine):
        db_utils.InitialBase.metadata.create_all(engine)  # the first tables, then the "kill"
        raise KeyboardInterrupt

    monkeypatch.setattr(db_utils, "_initialize_tables", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        environment.prepare_mlflow_store()
    assert not store.exists()
    assert list(tmp_path.glob(".mlflow.db.*.tmp"))  # what the killed run left

    monkeypatch.setattr(db_utils, "_initialize_tables", real)
    environment.prepare_mlflow_store()
    assert store.is_file() and not list(tmp_path.glob(".mlflow.db.*"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    client.create_experiment("alignloop")
    assert {experiment.name for experiment in client.search_experiments()} == {"alignloop", "Default"}
    before = store.stat().st_mtime_ns
    environment.prepare_mlflow_store()  # an existing store is left alone
    assert store.stat().st_mtime_ns == before


def test_other_tracking_uris_are_left_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path / 'mlruns'}")
    environment.prepare_mlflow_store()
    assert list(tmp_path.iterdir()) == []
