# cython: language_level=3
"""placeholder: the engine is being written."""
