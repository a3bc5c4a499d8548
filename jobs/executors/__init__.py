"""Executors: where a sweep's jobs run, one module per scheduler behind one protocol.

``base`` (the protocol, ``JobId``, ``Reconciled``), ``registry`` (``executor_for``, names and
plugins), ``local`` (worker processes on this machine), ``slurm`` (held arrays through
submitit) with ``slurm_client`` (the sacct/squeue/scancel calls). Nothing is imported here, so
that validating the ``cluster`` group (``jobs.settings`` reads ``registry``) loads no executor.
"""
