"""Hydra configs shipped as package data (found through the package, installed or not)."""
