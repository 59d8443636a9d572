"""TimeDistill: distil a pretrained forecaster into an MLP student (`moe-ts distill`)."""
