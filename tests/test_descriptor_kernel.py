"""The numba inference kernel (GaussianMoments.inference_features) computes the same Gaussian moments as the torch module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from oedal.gmnn.batching import make_batch
from oedal.gmnn.kernels import using
from oedal.data.structures import Structures
from oedal.gmnn.model import GMNN
from oedal.settings import CONTRACTIONS, ModelSettings


def _model(contractions, dtype="float64", r_cut=3.2, n_radial=4):
    ms = ModelSettings.model_validate({"dtype": dtype, "hidden": [8],
                                       "descriptor": {"r_cut": r_cut, "n_radial": n_radial, "contractions": contractions}})
    torch.manual_seed(2)
    return GMNN(ms, [1, 6, 8])


def _both(model, structures):
    b = make_batch(structures, model.cutoff, model.species, dtype=model.dtype)
    args = (b.displacements(), b.species, b.pair_i, b.pair_j, b.species.shape[0])
    with torch.no_grad(), using("numba"):
        return model.descriptor(*args), model.descriptor.inference_features(*args)


@pytest.mark.parametrize("contractions", [list(CONTRACTIONS), ["c321", "c0", "c222"], ["c332", "c112"], ["c33"],
                                          list(reversed(CONTRACTIONS))])
def test_kernel_equals_torch_descriptor(contractions, ethanol_structures, small_periodic_cells):
    model = _model(contractions)
    for structures in (ethanol_structures.subset(np.arange(5)), small_periodic_cells):
        ref, got = _both(model, structures)
        assert got is not None and got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_kernel_float32_and_isolated_atoms(ethanol_structures):
    """float32 (the default model dtype) and an atom with no neighbours at all (zero features)."""
    model = _model(list(CONTRACTIONS), dtype="float32", r_cut=5.0, n_radial=5)
    lone = Structures.from_atoms([Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [20.0, 0, 0]])])
    for structures in (ethanol_structures.subset(np.arange(5)), lone):
        ref, got = _both(model, structures)
        torch.testing.assert_close(got, ref, rtol=2e-5, atol=2e-5 * float(ref.abs().max()))


def test_unsorted_pairs_take_the_torch_route(ethanol_structures):
    model = _model(list(CONTRACTIONS))
    b = make_batch(ethanol_structures.subset([0]), model.cutoff, model.species, dtype=model.dtype)
    perm = torch.randperm(b.pair_i.shape[0], generator=torch.Generator().manual_seed(0))
    args = (b.displacements()[perm], b.species, b.pair_i[perm], b.pair_j[perm], b.species.shape[0])
    with using("numba"):
        torch.testing.assert_close(model.descriptor.inference_features(*args), model.descriptor(*args).detach())
