"""Time-LLM reprogramming with prompt tuning (Time-DPD) over a frozen language model (docs/ARCHITECTURE.md §10)."""
