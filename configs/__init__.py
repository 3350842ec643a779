"""Training configs: variants built from configs/common.py."""
