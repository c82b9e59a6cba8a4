"""The ``spheroid`` command line: one click group, one small module per command family."""
