"""The table schema's feature kinds, one module each (feature_kinds.py
registers them; base.py says what a kind defines)."""
