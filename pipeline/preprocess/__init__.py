"""Preprocessing: a named chain of filters per channel, and its distributed runner."""
