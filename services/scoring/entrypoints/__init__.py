"""Entrypoints: the faust agents, the deadline timer and the web pages of the scoring service."""
