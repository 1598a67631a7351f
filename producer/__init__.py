"""Runstream SDK."""
