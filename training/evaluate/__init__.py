"""Scoring branches and stores on labelled data."""
