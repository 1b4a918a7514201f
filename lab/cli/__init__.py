"""Thin command-line entry points: parse, call the library, print."""
