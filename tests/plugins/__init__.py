"""Plugins the tests load: an installable example package and deliberately broken modules."""
