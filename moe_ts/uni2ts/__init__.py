"""Compatibility with Salesforce uni2ts: checkpoint conversion, uni2ts decoding and group packing."""
