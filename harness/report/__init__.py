"""Drill records and the reports built from them."""
