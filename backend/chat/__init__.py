"""Threads, runs and chat over HTTP: the doors that start agent runs and stream them."""
