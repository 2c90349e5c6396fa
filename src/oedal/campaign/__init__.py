"""The active-learning campaign: what the Snakefile imports, the glue steps between the library's steps, sampling."""
