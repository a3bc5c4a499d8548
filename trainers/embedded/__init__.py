"""The embedded CPU trainer: the FLAME-MoE architecture in plain PyTorch on a real corpus."""
