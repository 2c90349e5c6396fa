"""oedal — active learning of Gaussian-moment neural-network potentials with optimal experimental design.

Zaverkin & Kästner, Mach. Learn.: Sci. Technol. 2, 035009 (2021).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "GMNNCalculator"]


def __getattr__(name: str):
    # Lazy: `import oedal` must not import torch/ase for the CLI's --help.
    if name == "GMNNCalculator":
        from oedal.gmnn.calculator import GMNNCalculator

        return GMNNCalculator
    raise AttributeError(name)
