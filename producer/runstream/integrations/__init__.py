"""Framework integrations: one run per job from the hooks frameworks call on every rank.

* :mod:`runstream.integrations.lightning`: ``RunstreamLogger`` (a Lightning ``Logger``)
  and ``RunstreamCallback`` (per-rank step telemetry) for ``lightning.pytorch.Trainer``;
* :mod:`runstream.integrations.transformers`: ``RunstreamCallback`` for Hugging Face's
  ``Trainer``;
* :mod:`runstream.integrations.keras`: ``RunstreamCallback`` for Keras 3's ``fit``.

Each module imports its framework when it is imported itself; importing this package
imports none of them (nor does ``import runstream``). In a distributed job every rank
joins the same run: run-level data (params, reduced metrics, checkpoints) comes from
rank 0 only, per-rank telemetry (``telemetry/*``, see :mod:`runstream.telemetry`) and
the status from every rank.
"""

from __future__ import annotations

__all__: list[str] = []
