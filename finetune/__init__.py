"""Finetuning a pretrained model on one dataset (docs/ARCHITECTURE.md §9): `moe-ts finetune`."""
