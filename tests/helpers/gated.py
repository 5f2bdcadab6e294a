"""A service whose model load waits for a gate: for tests of what answers while it loads."""

from __future__ import annotations

import threading


def gate_model_loading(monkeypatch) -> threading.Event:
    """Make `serve.app` build its Predictor only once the returned event is set (or after 10 s)."""
    import deepautodnn.serve.app as service

    gate = threading.Event()
    real = service.Predictor

    def slow(*args, **kwargs):
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "Predictor", slow)
    return gate
