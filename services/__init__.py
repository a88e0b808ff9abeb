"""Michi services: one job each."""
