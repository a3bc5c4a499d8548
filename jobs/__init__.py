"""Submission through submitit (local | SLURM), the run ledger, status, waiting, the CLI."""
