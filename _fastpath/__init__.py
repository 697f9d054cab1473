"""The compiled hot path (Cython), installed as gateway._fastpath."""
