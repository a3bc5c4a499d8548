"""What runs inside a job: the embedded CPU trainer, the simulated trainer, the Megatron
launcher."""
