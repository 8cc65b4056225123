"""Evaluation: scoring saved predictions against gold, and running a pipeline over labelled data."""
