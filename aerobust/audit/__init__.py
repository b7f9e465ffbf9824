"""The audit: models x attacks x lambdas x trials on a fixed plan, resumable block by block.

- ``config``: :class:`ModelSpec` (one audited model) and :class:`AuditConfig` (the audit's identity).
- ``plan``: :class:`Plan`, the fixed images and targets, drawn from the seed alone.
- ``store``: :class:`AuditStore`, the only reader and writer of an audit folder (its layout is there),
  and ``load_results``, which reports, records and comparisons read folders with.
- ``runner``: :class:`Audit` (``load_model``, ``classifier_head``, ``run_block``, ``finish``, ``run``)
  and :func:`run_audit`.
- ``sharded``: the same audit under torchrun, built only from the runner's and store's public parts.
"""
from .config import PAPER_ATTACKS, AuditConfig, ModelSpec
from .plan import Plan
from .runner import Audit, run_audit
from .store import FINGERPRINT_FILE, AuditResults, AuditStore, load_results

__all__ = ["PAPER_ATTACKS", "FINGERPRINT_FILE", "Audit", "AuditConfig", "AuditResults", "AuditStore", "ModelSpec",
           "Plan", "load_results", "run_audit"]
