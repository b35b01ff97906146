"""Evaluation of world models against the oracle."""
