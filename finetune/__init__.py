"""Finetuning a pretrained model on one dataset (docs/ARCHITECTURE.md §8): `moe-ts finetune`."""
