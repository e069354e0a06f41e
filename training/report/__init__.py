"""The accuracy report: its page, plots, the sweep log and the depth rule."""
