"""Optimal experimental design: Fisher maths, output-layer sensitivities, scoring and batch selection."""
