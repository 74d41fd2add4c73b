"""Robustness evaluation: metrics, the streaming resumable runner, torch.distributed sharding and reports."""
