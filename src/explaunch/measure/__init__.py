"""Measurements: energy, compute (latency, throughput, FLOPs) and memory. Heavy libraries are imported lazily."""
