"""Content hashing and the registries (local and Azure ML) behind one interface (base.py)."""
