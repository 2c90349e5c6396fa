"""Output-layer sensitivities of a GM-NN (DESIGN §6; paper eqs. 17 and 19).

With E_i = σ_{Z_i} (w·h_i + b) + μ_{Z_i} only the output weights w (d = model.d) enter the scores:

* QS1, energy:  g(x) = ∂E/∂w = Σ_i σ_{Z_i} h_i — one d-vector per structure, free with the forward pass.
* QS2, forces:  g_jk(x) = ∂F_jk/∂w = −∂(Σ_i σ_{Z_i} h_i)/∂R_jk — a d × 3N Jacobian per structure.

The Jacobian is computed for a whole batch at once. h_i depends on the displacements r_p of atom
i's own pairs only, so pairs get a *slot* (their rank among the pairs with the same centre atom),
and the derivatives ∂(σ_i h_i)/∂(r_p)_k are scattered to Cartesian atoms at the end
(r_p = R_j − R_i + shift: +to j, −to i). Three modes give the same numbers (tests/test_sensitivities.py):

* ``structured`` (the default): closed-form feature tangents (gmnn.tangents.feature_tangents: partner tensors
  of the contractions, each pair moved along its own frame), three rows per pair, then the GEMMs
  through the MLP. The GEMMs are the floor: ≈ 3·(neighbours) rows per atom against one for QS1.
  On a CPU (numba) the rows are packed per atom and the three rotational modes of every atom are
  not computed but rebuilt after the MLP (3n − 3 rows for n neighbours: the descriptor is
  rotation invariant, gmnn.kernels.tangents "QS2 in packed rows"), in chunks of CHUNK_ROWS rows
  that stay in cache; elsewhere (GPU, or the torch kernel backend) the pure-torch route pads every
  atom to the same number of slots. A structure whose work in one pass would exceed TANGENT_BUDGET
  (a large periodic cell) is streamed in blocks of consecutive atoms (_atom_blocks): pair terms,
  features, partners, tangent rows and GEMMs per block, each block's scatter adding into the
  structure's (A, 3, d) result before the next block starts; memory is bounded by the budget, not
  by the cell. A batch of ordinary structures is one block, computed as it always was.
* ``forward``: one generic forward-mode tangent (slot t, component k) — δr_p = e_k for every pair
  with slot t — vmapped through ``torch.func.jvp`` of the whole model (≈6× slower; the reference).
* ``reverse``: d vmapped VJPs (one pass, not blocked); ``auto`` takes it on the torch route when
  3·max_slots ≥ d (large neighbourhoods) and the batch fits one pass. The packed route beats it at
  any neighbourhood (4× at 92 neighbours, where the VJPs hold ≈ 3 MB per atom), so ``auto`` keeps it.

QS1 alone (energy_sensitivities_batch) uses the fused CPU descriptor kernel (GMNN.predict_features).
The model is read through its public interfaces only: GMNN.readout() (the MLP, a'), atomic_scale (σ),
the descriptor's pair terms, contract() and tangents(), and the kernel backend (gmnn.kernels).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NamedTuple

import numpy as np
import torch

from oedal.gmnn.batching import Batch, BatchLoader
from oedal.gmnn.descriptors import FULL_INDEX, UNIQUE_INDEX, grouped_by_atom
from oedal.gmnn.kernels import backend
from oedal.gmnn.model import GMNN, Readout, pair_forces, pair_virial
from oedal.gmnn.tangents import feature_tangents, local_frames

log = logging.getLogger(__name__)

Mode = Literal["auto", "structured", "forward", "reverse"]
TANGENT_BUDGET = 128 * 2**20
"""Bytes of QS2 work per batch, the one bound on scoring memory beyond the inputs and results:
batches hold as many structures as keep one vmapped intermediate (tangents × atoms × widest layer)
under it (_structures_per_batch), and a structure whose work in one pass exceeds it (_work_bytes: a
large periodic cell) is streamed in blocks of atoms of at most this much (_atom_blocks). What stays
proportional to a structure is its neighbour list (≈ 100 B per pair) and its result (3·N × d float64)."""
ENERGY_BATCH = 1024  # structures per forward pass for QS1


class BatchSensitivities(NamedTuple):
    energy: torch.Tensor  # (n_structures, d): g = Σ_i σ_i h_i
    forces: torch.Tensor | None  # (n_atoms, 3, d): ∂F_jk/∂w = −∂(Σ_i σ_i h_i)/∂R_jk


def pair_slots(pair_i: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, int]:
    """Rank of every pair among the pairs with the same centre atom → (slot (n_pairs,), max_slots)."""
    if pair_i.numel() == 0:
        return pair_i.clone(), 0
    order = torch.argsort(pair_i, stable=True)
    counts = torch.bincount(pair_i, minlength=n_atoms)
    first = torch.cumsum(counts, 0) - counts  # (n_atoms,) index of the atom's first pair in ``order``
    slot = torch.empty_like(pair_i)
    slot[order] = torch.arange(pair_i.numel(), device=pair_i.device) - first[pair_i[order]]
    return slot, int(counts.max())


def energy_sensitivities_batch(model: GMNN, batch: Batch) -> torch.Tensor:
    """g = ∂E/∂w = Σ_i σ_{Z_i} h_i per structure: (n_structures, d) in the model dtype."""
    with torch.no_grad():
        y = model.atomic_scale(batch)[:, None] * model.predict_features(batch)  # (n_atoms, d)
        return y.new_zeros((batch.n_structures, y.shape[1])).index_add_(0, batch.structure, y)


def force_sensitivities_batch(model: GMNN, batch: Batch, mode: Mode = "auto",
                              out: np.ndarray | None = None) -> BatchSensitivities:
    """Energy and force sensitivities of one batch (exact Jacobian; structured, forward or reverse mode).

    ``out``: a zeroed float64 array (n_atoms, 3, d) to write the force sensitivities into (the CPU
    kernel writes float64 directly); ``forces`` of the result is then a view of it."""
    res = _force_sensitivities_batch(model, batch, mode, out)
    if out is None:
        return res._replace(forces=res.forces.to(model.dtype))
    if res.forces.data_ptr() != out.ctypes.data:
        out[...] = res.forces.double().cpu().numpy()
        res = res._replace(forces=torch.from_numpy(out))
    return res


def _force_sensitivities_batch(model: GMNN, batch: Batch, mode: Mode, out: np.ndarray | None) -> BatchSensitivities:
    n_atoms = batch.species.shape[0]
    disp = batch.displacements().detach().to(model.dtype)  # (n_pairs, 3) Å
    sigma = model.atomic_scale(batch).detach()[:, None]  # (n_atoms, 1)
    d = model.d
    counts = torch.bincount(batch.pair_i, minlength=n_atoms)  # (n_atoms,) pairs per centre atom
    n_slots = int(counts.max()) if disp.shape[0] else 0
    packed = backend().tangents is not None and disp.device.type == "cpu" and grouped_by_atom(batch.pair_i)
    blocks = _atom_blocks(*_work_bytes(model, counts.cpu().numpy(), packed), _atom_start(batch), TANGENT_BUDGET)
    if mode == "auto":  # reverse (d VJPs) beats the padded torch route's 3·slots rows per atom, where it fits one pass
        mode = "structured" if packed or 3 * n_slots < d or len(blocks) > 1 else "reverse"

    with torch.no_grad():
        if disp.shape[0] == 0:
            y = sigma * model.atomic_features(batch, disp)
            return BatchSensitivities(_per_structure(y, batch), y.new_zeros((n_atoms, 3, d)))
        if mode == "structured":
            with _frozen(model):
                if packed:
                    y, forces = _structured_packed(model, batch, disp, sigma, blocks, out)
                else:
                    y, forces = _structured_blocks(model, batch, disp, sigma, blocks)
            return BatchSensitivities(_per_structure(y, batch), forces)
        y, c = _generic(model, batch, disp, sigma, mode)
        return BatchSensitivities(_per_structure(y, batch), pair_forces(batch, c))


def _generic(model: GMNN, batch: Batch, disp: torch.Tensor, sigma: torch.Tensor,
             mode: Literal["forward", "reverse"]) -> tuple[torch.Tensor, torch.Tensor]:
    """(σh (A, d), pair derivatives c (n_pairs, 3, d) of Σσh wrt r_p) through the whole model, by
    vmapped forward-mode tangents or d vmapped VJPs (the references; one pass, not blocked)."""
    n_atoms, d = batch.species.shape[0], model.d

    def f(dr: torch.Tensor) -> torch.Tensor:
        return sigma * model.atomic_features(batch, dr)  # (n_atoms, d)

    if mode == "forward":
        slot, n_slots = pair_slots(batch.pair_i, n_atoms)
        tangents = torch.zeros((n_slots, 3, disp.shape[0], 3), dtype=disp.dtype, device=disp.device)
        pairs = torch.arange(disp.shape[0], device=disp.device)
        for k in range(3):
            tangents[slot, k, pairs, k] = 1.0
        tangents = tangents.reshape(3 * n_slots, disp.shape[0], 3)

        def jvp(t: torch.Tensor):
            return torch.func.jvp(f, (disp,), (t,))

        with _frozen(model):
            y, dy = torch.func.vmap(jvp, out_dims=(None, 0))(tangents)  # y (A, d); dy (3S, A, d)
        return y, dy.reshape(n_slots, 3, n_atoms, d)[slot, :, batch.pair_i, :]  # (n_pairs, 3, d)
    eye = torch.eye(d, dtype=disp.dtype, device=disp.device)
    with torch.enable_grad(), _frozen(model):
        y, vjp = torch.func.vjp(f, disp)
        (gr,) = torch.func.vmap(vjp)(eye[:, None, :].expand(d, n_atoms, d))  # (d, n_pairs, 3)
    return y, gr.permute(1, 2, 0)  # (n_pairs, 3, d)


VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])  # (rows, columns) of xx yy zz yz xz xy, ASE's Voigt order


def virial_sensitivities_batch(model: GMNN, batch: Batch) -> torch.Tensor:
    """∂W/∂w of every structure of ``batch``: (n_structures, 3, 3, d) float64, eV per unit weight.

    The virial W_ab = Σ_p (∂E/∂r_p)_a (r_p)_b (GMNN.evaluate) is linear in the output weights w, as E is:
    with c_p = ∂(Σ_i σ_i h_i)/∂r_p (n_pairs, 3, d), ∂W_ab/∂w = Σ_p (c_p)_a (r_p)_b, and W = Σ_k w_k ∂W/∂w_k
    (the output bias moves no atom). The pair derivatives come from d vmapped VJPs in one pass (≈ 9·d numbers
    per pair held at once): meant for the cells of an MD step or a test set, not for a pool."""
    disp = batch.displacements().detach().to(model.dtype)  # (n_pairs, 3) Å
    if disp.shape[0] == 0:
        return disp.new_zeros((batch.n_structures, 3, 3, model.d))
    sigma = model.atomic_scale(batch).detach()[:, None]  # (n_atoms, 1)
    with torch.no_grad():
        _, c = _generic(model, batch, disp, sigma, "reverse")  # (n_pairs, 3, d)
        return pair_virial(batch, c, disp)  # (n_structures, 3, 3, d)


def voigt_stress_sensitivities(g_virial: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """∂σ/∂w from ∂W/∂w ``(n, 3, 3, d)`` and the volumes ``(n,)`` Å³: (n, 6, d) eV/Å³ per unit weight, the
    symmetric part in Voigt order (σ = W/V, as GMNN.evaluate's stress); NaN rows where the volume is NaN."""
    g = np.asarray(g_virial, dtype=np.float64)
    sym = 0.5 * (g + g.transpose(0, 2, 1, 3))
    return sym[:, VOIGT[0], VOIGT[1], :] / np.asarray(volume, dtype=np.float64)[:, None, None]


def stress_sensitivities(model: GMNN, structures, batch_size: int = 64) -> np.ndarray:
    """∂σ/∂w of every structure, in order: (n, 6, d) float64 eV/Å³ per unit weight (Voigt order); NaN rows for
    structures that are not periodic in all three directions (no volume, no stress)."""
    from oedal.data.structures import cell_volumes

    model.eval()
    parts = [virial_sensitivities_batch(model, b).double().cpu().numpy()
             for b in _loader(model, structures, batch_size)]
    g = np.concatenate(parts) if parts else np.zeros((0, 3, 3, model.d))
    return voigt_stress_sensitivities(g, cell_volumes(structures.cell, structures.pbc))


class _Block(NamedTuple):
    """Centre atoms a0..a1 − 1 of a batch whose QS2 work runs in one pass (_atom_blocks)."""

    atoms: tuple[int, int]  # (a0, a1), batch indices
    span: tuple[int, int]  # (lo, hi): the atoms of their structures, where their force sensitivities go
    starts: np.ndarray | None  # whole structures: the first atom of each and the end, from lo; None: part of one


def _atom_start(batch: Batch) -> np.ndarray:
    """(n_structures + 1,) the first atom of every structure of the batch, and the end."""
    return np.concatenate([[0], np.cumsum(batch.n_atoms.cpu().numpy())]).astype(np.int64)


def _work_bytes(model: GMNN, counts: np.ndarray, packed: bool) -> tuple[np.ndarray, np.ndarray]:
    """QS2 work per atom with ``counts`` (A,) pairs, in bytes (an upper estimate): (in one pass, in a
    block of a structure streamed by atoms). Per pair: its frame, r, the radial and angular factors of
    its three rows and its indices; per atom: features, partners and every layer's activations; per
    row (three per pair): the feature tangents and every layer's output. The packed route streams a
    block's rows in chunks of CHUNK_ROWS (≈ 3 MB, not counted); the torch route holds them all, and
    FeatureTangents builds its tangents through three more arrays of their size (the local-frame
    tangents and the two factors gathered for each of their products)."""
    desc, item = model.descriptor, torch.finfo(model.dtype).bits // 8
    width = desc.n_features + sum(model.settings.hidden)
    partners = sum(k * n for k, n in zip(feature_tangents(desc).n_partners, (3, 6, 10)))
    per_pair = item * (3 * 3 + 1 + 3 * (desc.n_radial + 20)) + 5 * 8
    block = item * (2 * width + partners) + 8 * 8 + counts * per_pair
    whole = block + counts * (3 * item * width)
    if packed:
        return whole, block
    torch_route = whole + counts * (3 * 3 * item * desc.n_features)
    return torch_route, torch_route


def _atom_blocks(whole: np.ndarray, part: np.ndarray, atom_start: np.ndarray, budget: int) -> list[_Block]:
    """The blocks of a batch: the runs of whole structures between those whose work in one pass
    (``whole``, bytes per atom (A,)) exceeds ``budget``, and each of those in blocks of consecutive
    atoms of at most ``budget`` bytes of ``part`` (at least one atom each). A batch of ordinary
    structures is one block; atom_start (S + 1,): the first atom of every structure and the end."""
    per_structure = np.diff(np.concatenate([[0.0], np.cumsum(whole)])[atom_start])
    n, blocks, run = len(atom_start) - 1, [], 0  # run: the first structure of the current run
    for s in [*np.flatnonzero(per_structure > budget).tolist(), n]:
        lo, hi = int(atom_start[run]), int(atom_start[s])
        if s > run:
            blocks.append(_Block((lo, hi), (lo, hi), atom_start[run:s + 1] - lo))
        if s < n:
            lo, hi = int(atom_start[s]), int(atom_start[s + 1])
            sums = np.concatenate([[0.0], np.cumsum(part[lo:hi])])
            blocks += [_Block((lo + a0, lo + a1), (lo, hi), None) for a0, a1 in _chunks(sums, budget)]
        run = s + 1
    return blocks


class _Pairs(NamedTuple):
    """The pairs of a block of centre atoms for the torch route (_structured)."""

    i: torch.Tensor  # (P,) centre atom, from the block's first atom
    j: torch.Tensor  # (P,) neighbour atom (batch index)
    kind: torch.Tensor  # (P,) row of the species pair in β (GaussianMoments.pair_types)
    disp: torch.Tensor  # (P, 3) Å
    first: int  # the block's first atom (batch index)


def _structured_blocks(model: GMNN, batch: Batch, disp: torch.Tensor, sigma: torch.Tensor,
                       blocks: list[_Block]) -> tuple[torch.Tensor, torch.Tensor]:
    """``_structured`` block by block: (σh (A, d), force sensitivities (A, 3, d)); one block in one pass."""
    kind = model.descriptor.pair_types(batch.species, batch.pair_i, batch.pair_j)
    if len(blocks) == 1:
        return _structured(model, _Pairs(batch.pair_i, batch.pair_j, kind, disp, 0), sigma)
    n_atoms = batch.species.shape[0]
    y, forces = sigma.new_empty((n_atoms, model.d)), disp.new_zeros((n_atoms, 3, model.d))
    for (a0, a1), _, _ in blocks:
        sel = torch.nonzero((batch.pair_i >= a0) & (batch.pair_i < a1)).squeeze(1)
        pairs = _Pairs(batch.pair_i[sel] - a0, batch.pair_j[sel], kind[sel], disp[sel], a0)
        y[a0:a1] = _structured(model, pairs, sigma[a0:a1], forces)[0]
    return y, forces


def _structured(model: GMNN, pairs: _Pairs, sigma: torch.Tensor,
                forces: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(σh (A, d), force sensitivities −∂(Σσh)/∂R (A, 3, d)) of the centre atoms of ``pairs`` (σ (A, 1))
    from closed-form feature tangents; with ``forces`` (batch atoms, 3, d), added into it instead.

    Each pair p is displaced along its own frame (r̂, e1, e2): along r̂ only R_s(r) changes, across
    it only r̂^{⊗L}, so each of the three tangent rows is one product v ⊗ y of a radial and an
    angular factor (closed-form derivatives of the radial and angular terms, all pairs at once). The rows are
    laid out (atom, slot, axis); gmnn.tangents.feature_tangents gives ∂D/∂r_p in x, y, z, and the MLP carries
    the 3·slots rows of every atom as two GEMMs with act'(z) of the atom in between.
    """
    desc, disp = model.descriptor, pairs.disp
    n_atoms, n_pairs = sigma.shape[0], disp.shape[0]
    slot, n_slots = pair_slots(pairs.i, n_atoms)
    frames = local_frames(disp)  # (P, 3, 3)

    r = torch.linalg.vector_norm(disp, dim=-1)  # (P,) Å
    rad, drad = desc.radial_derivative(r, pairs.kind)  # R, ∂R/∂r
    ang = desc.angular(frames[:, 0])  # r̂^{⊗L}
    # across r̂ along a unit e ⊥ r̂: ∂r̂ = e / r
    dang = [desc.angular_derivative(frames[:, 0], frames[:, e] / r[:, None]) for e in (1, 2)]
    dense = n_pairs == n_atoms * n_slots  # pairs grouped by atom, every atom with n_slots of them
    where = None if dense else pairs.i * n_slots + slot  # (P,) flat (atom, slot)

    def slots(x: torch.Tensor) -> torch.Tensor:  # (P, ...) → (A, S, ...), zero rows for empty slots
        if dense:
            return x.reshape(n_atoms, n_slots, *x.shape[1:])
        full = x.new_zeros((n_atoms * n_slots, *x.shape[1:]))
        full[where] = x
        return full.reshape(n_atoms, n_slots, *x.shape[1:])

    v = slots(torch.stack([drad, rad, rad], 2))  # (A, S, n_radial, 3): ∂R/∂r along r̂; R across
    y = slots(torch.stack([ang, dang[0], dang[1]], 2))  # (A, S, 20, 3): r̂^{⊗L} along r̂; ∂_e r̂^{⊗L} across
    psi = torch.bmm(v[..., 1].transpose(1, 2).contiguous(), y[..., 0].contiguous())  # (A, n_radial, 20) moments
    v = v.permute(0, 2, 1, 3).reshape(n_atoms, -1, 3 * n_slots)  # (A, n_radial, 3S)
    y = y.permute(0, 2, 1, 3).reshape(n_atoms, 20, 3 * n_slots)  # (A, 20, 3S)
    x = desc.contract(psi)  # (A, F)
    rows = n_atoms * 3 * n_slots
    dx = feature_tangents(desc)(psi, v, y, slots(frames), out=_WORK.get("features", (n_atoms, n_slots, 3, x.shape[1]), x))
    dx = dx.reshape(rows, -1)  # (A·S·3, F): row (atom, slot, x/y/z)
    readout = model.readout()
    for k, layer in enumerate(readout.layers):
        x = layer(x)
        dx = torch.mm(dx, layer.weight.T, out=_WORK.get(f"layer{k}", (rows, layer.out_features), dx))
        x, g = readout.act_grad(x)  # (A, width)
        if k == len(readout.layers) - 1:
            g = g * sigma  # σ_i folded into the last act'
        dx.reshape(n_atoms, 3 * n_slots, -1).mul_(g[:, None, :])
    j_of_slot = pairs.j if dense else pairs.j.new_zeros(n_atoms * n_slots).index_put_((where,), pairs.j)
    return sigma * x, _scatter_slots(dx.reshape(n_atoms, n_slots, 3, -1), j_of_slot, pairs.first, forces)


def _scatter_slots(c: torch.Tensor, j_of_slot: torch.Tensor, first: int,
                   forces: torch.Tensor | None) -> torch.Tensor:
    """Rows c (A, S, 3, d) of the centre atoms first.. of a block → force sensitivities (F = −∂E/∂R,
    r_p = R_j − R_i + shift): +c to the centre atom, a sum over its slots; −c to the neighbour
    j_of_slot (A·S,). Empty slots hold exact zeros, so their rows may go to atom 0. Added into
    ``forces`` (batch atoms, 3, d); without it, the block is the batch and the result is new."""
    if forces is None:
        forces = c.sum(1)  # (A, 3, d)
    else:
        forces[first:first + c.shape[0]] += c.sum(1)
    return forces.index_add_(0, j_of_slot, c.reshape(-1, *c.shape[2:]), alpha=-1)


def _structured_packed(model: GMNN, batch: Batch, disp: torch.Tensor, sigma: torch.Tensor, blocks: list[_Block],
                       out: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``_structured`` on a CPU with the numba kernels (pairs grouped by atom), in packed rows, block
    by block (_atom_blocks): (σh (A, d), forces (A, 3, d) float64).

    Only 3·n_i − 3 rows of atom i go through the MLP: the three rotational modes follow from the
    others (oedal.gmnn.kernels, "QS2 in packed rows"). Rows stay in the pairs' frames until after the
    MLP, so the rotation to x, y, z, the σ·act' of the last layer and the scatter to atoms are one
    pass over d-wide rows (kernels.scatter_rows), written straight into float64.
    """
    n_atoms = batch.species.shape[0]
    pair_start = np.zeros(n_atoms + 1, np.int64)
    np.cumsum(torch.bincount(batch.pair_i, minlength=n_atoms).numpy(), out=pair_start[1:])
    kind = model.descriptor.pair_types(batch.species, batch.pair_i, batch.pair_j).numpy()
    readout = model.readout()
    if out is None:
        out = np.zeros((n_atoms, 3, model.d))
    h = torch.empty((n_atoms, model.d), dtype=model.dtype)
    for block in blocks:
        (a0, a1), (lo, hi) = block.atoms, block.span
        pairs = _PackedPairs(model, batch, disp, pair_start, kind, block)
        h_block, acts, last = _primal(readout, pairs.features, sigma[a0:a1])
        h[a0:a1] = h_block
        pairs.push_through(readout, acts, last, out[lo:hi])
    return sigma * h, torch.from_numpy(out)


class _PackedPairs:
    """One block's pair terms and packed rows for ``_structured_packed`` (numpy arrays for the kernels,
    atoms and pairs numbered from the block's first).

    frames (P, 3, 3), r (P,), v (P, 3, n_radial), y (P, 3, 20): kernels.pairs.pair_rows; features
    (A, F) and partners [(A, K_L, unique)]: kernels.tangents.features_partners; drop (A, 3),
    row_start (A + 1,): the rows not computed per atom (rotation_drops) and where each atom's rows
    start; pair_j (P,): the neighbours, numbered from the first atom of the block's structures."""

    def __init__(self, model: GMNN, batch: Batch, disp: torch.Tensor, pair_start: np.ndarray, kind: np.ndarray,
                 block: _Block):
        kernels, desc = backend(), model.descriptor
        self.ft, self.block = feature_tangents(desc), block
        (a0, a1), lo = block.atoms, block.span[0]
        p0, p1 = int(pair_start[a0]), int(pair_start[a1])
        self.pair_start = pair_start[a0:a1 + 1] - p0
        disp = disp[p0:p1].contiguous().numpy()
        n_pairs, n_atoms, dtype = p1 - p0, a1 - a0, disp.dtype
        self.pair_j = batch.pair_j[p0:p1].numpy() - lo
        self.max_pairs = int(np.max(np.diff(self.pair_start)))
        self.frames, self.r = np.empty((n_pairs, 3, 3), dtype), np.empty(n_pairs, dtype)
        self.v = np.empty((n_pairs, 3, desc.n_radial), dtype)  # ∂R/∂r along r̂; R across
        self.y = np.empty((n_pairs, 3, 20), dtype)  # r̂^{⊗L} along r̂; ∂_e r̂^{⊗L} across
        kernels.pairs.pair_rows(disp, kind[p0:p1], desc.radial_basis(torch.float64), UNIQUE_INDEX, self.frames,
                                self.r, self.v, self.y)
        self.features = torch.empty((n_atoms, desc.n_features), dtype=model.dtype)
        self.partners = tuple(np.empty((n_atoms, k, n), dtype) for k, n in zip(self.ft.n_partners, (3, 6, 10)))
        kernels.tangents.features_partners((self.v, self.y), self.pair_start, (self.ft.rads_np, self.ft.cols_np),
                                           self.ft.family_flags, FULL_INDEX, self.features.numpy(), *self.partners)
        self.drop, counts = np.empty((n_atoms, 3), np.int64), np.empty(n_atoms, np.int64)
        kernels.tangents.rotation_drops(self.frames, self.r, self.pair_start, ROTATION_TAU, self.drop, counts)
        self.row_start = np.zeros(n_atoms + 1, np.int64)
        np.cumsum(counts, out=self.row_start[1:])
        self.layout = (self.pair_start, self.row_start, self.drop, self.max_pairs)  # of kernels.tangents

    def push_through(self, readout: Readout, acts: list[np.ndarray], last: np.ndarray, out: np.ndarray) -> None:
        """The block's rows through the MLP in chunks of ≈ CHUNK_ROWS rows, and their force sensitivities
        added into ``out`` (the atoms of the block's structures (hi − lo, 3, d) float64): chunks of whole
        structures scattered in parallel over them, or chunks of atoms of one structure one after the other."""
        kernels, geometry, starts = backend().tangents, (self.frames, self.r, self.pair_j), self.block.starts
        if starts is not None:
            chunks = [(int(starts[s0]), int(starts[s1]), s0, s1)
                      for s0, s1 in _chunks(self.row_start[starts], CHUNK_ROWS)]
        else:
            chunks = [(a0, a1, -1, -1) for a0, a1 in _chunks(self.row_start, CHUNK_ROWS)]
        self.reserve(readout, max(int(self.row_start[a1] - self.row_start[a0]) for a0, a1, _, _ in chunks))
        shift = self.block.atoms[0] - self.block.span[0]  # a block atom's index in out
        for a0, a1, s0, s1 in chunks:
            z = self.rows_through(acts, a0, a1)
            if starts is not None:
                kernels.scatter_rows(z, last, geometry, self.layout, starts, s0, s1, out)
            else:
                kernels.scatter_atoms(z, last, geometry, self.layout, a0, a1, shift, out)

    def rows_through(self, acts: list[np.ndarray], a0: int, a1: int) -> np.ndarray:
        """The MLP images z (rows, d) of the kept tangent rows of atoms a0..a1 − 1, act'(z) of every
        layer but the last applied (in a reserved buffer, valid until the next call)."""
        kernels, ft = backend().tangents, self.ft
        rows = int(self.row_start[a1] - self.row_start[a0])
        dx = self.buffers[0][:rows]
        kernels.tangent_rows((self.v, self.y), self.partners, (ft.rads_np, ft.cols_np), self.layout, a0, a1, dx.numpy())
        for k, (weight, buffer) in enumerate(zip(self.weights, self.buffers[1:])):
            dx = torch.mm(dx, weight, out=buffer[:rows])
            if k < len(acts):  # act'(z) of the row's atom; the last layer's in scatter_rows
                kernels.scale_rows(dx.numpy(), acts[k], self.row_start, a0, a1)
        return dx.numpy()

    def reserve(self, readout: Readout, max_rows: int) -> None:
        """Buffers for chunks of up to ``max_rows`` rows, and the MLP's weights (once per block)."""
        like = torch.from_numpy(self.v[:0])
        self.weights = [layer.weight.T for layer in readout.layers]
        self.buffers = [_WORK.get("features", (max_rows, self.features.shape[1]), like)]
        self.buffers += [_WORK.get(f"layer{k}", (max_rows, layer.out_features), like)
                         for k, layer in enumerate(readout.layers)]


def _primal(readout: Readout, x: torch.Tensor,
            sigma: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray], np.ndarray]:
    """The MLP on the features x (A, F): (h (A, d), act'(z) (A, width) of every layer but the last,
    and σ·act'(z) of the last layer (A, d))."""
    acts = []
    for layer in readout.layers:
        x, act = readout.act_grad(layer(x))
        acts.append(act)
    last = acts.pop() * sigma  # σ_i folded into the last act'
    return x, [act.contiguous().numpy() for act in acts], last.contiguous().numpy()


def _chunks(struct_rows: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Ranges (s0, s1) of whole structures of ≈ ``size`` rows (at least one structure each), from
    the first row of every structure and the end (n_structures + 1,): GEMM operands that stay in cache.
    (Any items with a size each: the atoms of _atom_blocks, with their bytes.)"""
    bounds = [0]
    n = len(struct_rows) - 1
    while bounds[-1] < n:
        s1 = int(np.searchsorted(struct_rows, struct_rows[bounds[-1]] + size, side="right")) - 1
        bounds.append(min(max(s1, bounds[-1] + 1), n))
    return list(zip(bounds[:-1], bounds[1:]))


CHUNK_ROWS = 1024  # tangent rows per GEMM on one thread: (1024, F) and (1024, width) stay in its core's cache
ROTATION_TAU = 0.05  # a third row is dropped only if its rotational coefficient is ≥ 0.05·r (kernels.rotation_drops)


class _Workspace(threading.local):
    """Reusable CPU buffers, one set per thread for the per-batch GEMM outputs: fresh multi-MB tensors cost page
    faults on every batch (measured 1.25× on the MLP step). A buffer is only read before the next
    batch asks for it again, and what callers keep is copied out of it (scatter, float64)."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor | None:
        """A (shape) view of buffer ``name`` with the dtype of ``like``; None off the CPU."""
        if like.device.type != "cpu":
            return None
        n = int(np.prod(shape))
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != like.dtype:
            buf = self.buffers[name] = like.new_empty(n)
        return buf[:n].view(shape)


_WORK = _Workspace()


class _frozen:
    """Context manager: parameters excluded from autograd while torch.func transforms run."""

    def __init__(self, model: GMNN):
        self.model = model

    def __enter__(self):
        self.flags = {k: p.requires_grad for k, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for k, p in self.model.named_parameters():
            p.requires_grad_(self.flags[k])


def _per_structure(y: torch.Tensor, batch: Batch) -> torch.Tensor:
    return y.new_zeros((batch.n_structures, y.shape[1])).index_add_(0, batch.structure, y)


def _loader(model: GMNN, structures, batch_size: int) -> BatchLoader:
    return model.loader(structures, batch_size)


def energy_sensitivities(model: GMNN, structures, batch_size: int | None = None) -> np.ndarray:
    """QS1 sensitivities of every structure, in order: (n, d) float64."""
    return all_sensitivities(model, structures, forces=False, batch_size=batch_size)[0]


def _structures_per_batch(model: GMNN, loader: BatchLoader) -> int:
    """Batch size (structures) keeping one vmapped intermediate under TANGENT_BUDGET."""
    width = max([model.descriptor.n_features, *model.settings.hidden])
    mean_atoms = max(1.0, float(np.mean(loader.n_atoms))) if loader.n_structures else 1.0
    max_slots = max(1, int(np.max(loader.n_pairs / np.maximum(loader.n_atoms, 1), initial=1)) * 2)
    per_structure = mean_atoms * min(3 * max_slots, model.d) * width * 4
    return max(1, int(TANGENT_BUDGET // per_structure))


def all_sensitivities(
    model: GMNN, structures, *, forces: bool = True, mode: Mode = "auto", batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(QS1 g (n, d), QS2 rows (3·n_atoms_total, d) or None) in float64, rows atom-major then x/y/z.

    On a CPU, groups of GROUP structures run in parallel, one thread each (``batch_threads``):
    the group's neighbour lists, then its batches."""
    model.eval()
    workers, n = batch_workers(model), len(structures.n_atoms)
    first_atom = np.concatenate([[0], np.cumsum(structures.n_atoms)]).astype(np.int64)
    g_f = np.zeros((int(first_atom[-1]), 3, model.d)) if forces else None
    if forces:
        feature_tangents(model.descriptor)  # built once, before the threads

    def group(s0: int, s1: int) -> list[np.ndarray]:
        loader = _loader(model, structures if (s0, s1) == (0, n) else structures.subset(np.arange(s0, s1)), 1)
        loader.batch_size = batch_size or _batch_size(model, loader, forces)
        out, a0 = [], int(first_atom[s0])
        for b in loader:
            if forces:
                n_atoms = b.species.shape[0]
                sens = force_sensitivities_batch(model, b, mode, out=g_f[a0:a0 + n_atoms])
                a0 += n_atoms
            else:
                sens = BatchSensitivities(energy_sensitivities_batch(model, b), None)
            out.append(sens.energy.double().cpu().numpy())
        return out

    groups = [(0, n)] if workers == 1 else [(s0, min(n, s0 + GROUP)) for s0 in range(0, n, GROUP)]
    with _frozen(model), batch_threads(workers) as run:
        g_e = [e for part in run(group, groups) for e in part]
    e = np.concatenate(g_e) if g_e else np.zeros((0, model.d))
    return e, (g_f.reshape(-1, model.d) if forces else None)


GROUP = 256  # structures per work item of one thread (neighbour lists and batches): QM9 has 511, ethanol 20


def _batch_size(model: GMNN, loader: BatchLoader, forces: bool) -> int:
    """Structures per batch: ENERGY_BATCH for QS1; for QS2 under TANGENT_BUDGET, as even as it can be."""
    if not forces:
        return ENERGY_BATCH
    most = _structures_per_batch(model, loader)
    n_batches = max(1, -(-loader.n_structures // most))
    return max(1, -(-loader.n_structures // n_batches))


def batch_workers(model: GMNN) -> int:
    """Threads that each run whole batches: torch's thread count on a CPU, one elsewhere (a GPU
    parallelises within the batch)."""
    return torch.get_num_threads() if next(model.parameters()).device.type == "cpu" else 1


@contextlib.contextmanager
def batch_threads(workers: int):
    """``run(fn, items)`` → [fn(*item) in order], on ``workers`` threads that each run whole
    items (groups of structures), with torch and the numba kernels single-threaded inside them
    (restored after).

    One thread per group beats two threads per operation here: the neighbour lists of one group
    overlap the other's arithmetic, the tangent rows, both GEMMs and the scatter stay in one
    core's cache, and the fork-joins around every kernel and GEMM disappear (benchmarks/bench_oed.py).
    At most 2·workers + 1 items are in flight, so memory stays bounded."""
    if workers <= 1:
        yield lambda fn, items: [fn(*item) for item in items]
        return
    kernels = backend()  # resolved on this thread, so that numba follows torch's thread count here (gmnn.kernels)
    n_torch = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, initializer=kernels.single_thread) as pool:
            def run(fn, items):
                pending, done = collections.deque(), []
                for item in items:
                    pending.append(pool.submit(fn, *item))
                    while len(pending) > 2 * workers:
                        done.append(pending.popleft().result())
                return done + [f.result() for f in pending]
            yield run
    finally:
        torch.set_num_threads(n_torch)


def force_sensitivities(model: GMNN, structures, mode: Mode = "auto", batch_size: int | None = None) -> np.ndarray:
    """QS2 sensitivities ∂F_jk/∂w of every atom component: (3·n_atoms_total, d) float64."""
    return all_sensitivities(model, structures, forces=True, mode=mode, batch_size=batch_size)[1]
