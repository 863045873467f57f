"""Measuring: training and inference speed (bench.py), and the HTTP service under load (loadtest.py)."""
