"""Coarse matching at 1/8: self/cross attention, similarity, dual-softmax, threshold, mutual NN.

Selection is written with fixed output shapes (top-K of the mutual-nearest rows, with a validity
mask) so the exported graph is static; K is ``max_matches`` (capped at the number of cells).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .attention import AttentionLayer


def logsumexp_last(x: torch.Tensor) -> torch.Tensor:
    """log-sum-exp over the last axis, kept: [..., n] -> [..., 1]. Written out (max, exp, sum,
    log) because ONNX Runtime ran its ReduceLogSumExp slower than these four kernels."""
    m = x.amax(dim=-1, keepdim=True)
    return torch.log(torch.exp(x - m).sum(dim=-1, keepdim=True)) + m


def band_cells(grid: Tuple[int, int], radius: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each cell of a row-major grid, the flat indices of the cells within ``radius`` cells
    of it ([N, (2r+1)^2], clamped at the border) and which of them are inside the grid."""
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    r = torch.arange(-radius, radius + 1)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    ny = ys.reshape(-1, 1) + dy.reshape(1, -1)
    nx = xs.reshape(-1, 1) + dx.reshape(1, -1)
    inside = (ny >= 0) & (ny < gh) & (nx >= 0) & (nx < gw)
    return ny.clamp(0, gh - 1) * gw + nx.clamp(0, gw - 1), inside


class CoarseMatching(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, temperature: float, band: int = 0):
        super().__init__()
        self.band = band  # >0: match within this many cells of the same position (match_in_band)
        self._band_cache: Dict[Tuple, Tuple[torch.Tensor, ...]] = {}  # _band_indices
        # Even layers attend within an image, odd layers across the two (LoFTR's order).
        self.layers = nn.ModuleList([AttentionLayer(dim, heads) for _ in range(layers)])
        self.temperature = temperature
        self.argmax_by_compare = False  # see _row_max; set only while exporting for OpenVINO

    def transform(self, fv: torch.Tensor, ft: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Both images go through each layer as one batch (the same weights, per-item maths): half
        # the graph nodes and twice-as-tall GEMMs, which is what a 2-core CPU runs faster.
        b = fv.shape[0]
        x = torch.cat([fv, ft], dim=0)
        for i, layer in enumerate(self.layers):
            if i % 2 == 0:
                x = layer(x, x)
            else:
                xv, xt = x[:b], x[b:]
                x = layer(x, torch.cat([xt, xv], dim=0))
        return x[:b], x[b:]

    def confidence(self, fv: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        """Dual-softmax matching confidence [B, N_visible, N_thermal]."""
        c = fv.shape[-1]
        sim = (fv @ ft.transpose(1, 2)) / (c * self.temperature)
        return torch.softmax(sim, dim=1) * torch.softmax(sim, dim=2)

    def match(self, fv: torch.Tensor, ft: torch.Tensor, threshold: float, k: int,
              grid: Optional[Tuple[int, int]] = None):
        """:meth:`select` of :meth:`confidence` without building the confidence matrix, or
        :meth:`match_in_band` when the module has a ``band`` (``grid``: the cells' (h, w)).

        In logs, conf_ij = 2 s_ij - R_i - C_j with R, C the row and column log-sum-exps of the
        similarity s, so a row's best thermal cell maximises 2 s_ij - C_j and a column's best
        visible cell maximises 2 s_ij - R_i. With the transposed similarity from a second matmul,
        every reduction runs along the last axis: ONNX Runtime's column softmax and column max
        (a strided walk over a 2080x2080 matrix) cost more than the matmul. Same matches and
        scores as ``select(confidence(...))`` up to float rounding (test_matcher_core.py).
        """
        if self.band > 0:
            if grid is None:
                raise ValueError("a banded coarse match needs the grid size")
            return self.match_in_band(fv, ft, threshold, k, grid)
        scale = 1.0 / (fv.shape[-1] * self.temperature)
        sim = (fv @ ft.transpose(1, 2)) * scale            # [B,N,M]
        sim_t = (ft @ fv.transpose(1, 2)) * scale          # [B,M,N], the same numbers transposed
        lse_r = logsumexp_last(sim)                        # [B,N,1]
        lse_c = logsumexp_last(sim_t)                      # [B,M,1]
        best, row_idx = self._row_max(2.0 * sim - lse_c.transpose(1, 2))
        row_val = torch.exp(best - lse_r.squeeze(2))
        col_val = torch.exp((2.0 * sim_t - lse_r.transpose(1, 2)).amax(dim=2) - lse_c.squeeze(2))
        # Row and column values come from two matmuls whose sums round differently: a pair is
        # mutual when its column holds nothing better beyond that rounding (1e-4 relative).
        return self._top_mutual(row_val, row_idx, col_val * (1.0 - 1e-4), threshold, k)

    def match_in_band(self, fv: torch.Tensor, ft: torch.Tensor, threshold: float, k: int,
                      grid: Tuple[int, int]):
        """Mutual nearest neighbours of the dual softmax taken over a band: each visible cell
        competes only for the thermal cells within ``band`` cells of its own position, and each
        thermal cell only for the visible cells within it.

        For guided passes: the visible image has been warped into the thermal frame by a
        verified fit, so a right match lies a few cells from its own position, and the whole
        image holds nothing for it but repeated structure to confuse it with. The full
        2080x2080 softmaxes, maxima and comparisons at 416x320 were most of the coarse level's
        time; over the band they are 121 values a cell. Written by hand: the band's indices are
        constants of the grid (static shapes for export), gathered from :meth:`_band_similarity`.
        """
        b, n, c = fv.shape
        idx, ok, at_rows, at_cols, windows = self._band_indices(grid, fv.device)
        sim = self._band_similarity(fv, ft, grid, windows) * (1.0 / (c * self.temperature))
        low = torch.full((), -1e4, dtype=sim.dtype, device=sim.device)
        rows = torch.where(ok, sim[:, at_rows].reshape(b, n, -1), low)  # s[i, band(i)]
        cols = torch.where(ok, sim[:, at_cols].reshape(b, n, -1), low)  # s[band(j), j]
        lse_r = logsumexp_last(rows)                                       # [B,N,1]
        lse_c = logsumexp_last(cols)                                       # [B,M,1]
        best, at = (2.0 * rows - lse_c.squeeze(2)[:, idx]).max(dim=2)
        row_val = torch.exp(best - lse_r.squeeze(2))
        row_idx = torch.gather(idx.expand(b, -1, -1), 2, at.unsqueeze(2)).squeeze(2)
        col_val = torch.exp((2.0 * cols - lse_r.squeeze(2)[:, idx]).amax(dim=2) - lse_c.squeeze(2))
        return self._top_mutual(row_val, row_idx, col_val * (1.0 - 1e-4), threshold, k)

    #: Visible grid rows per block of the banded similarity (_band_similarity): each block is
    #: one matmul against the thermal rows within the band of it, BAND_BLOCK_ROWS + 2 band rows.
    #: Fewer rows a block do fewer products but smaller matmuls; 4 at 416x320 (40 rows, band 5)
    #: computes 14 of the 40 thermal rows for each visible row.
    BAND_BLOCK_ROWS = 4

    def _band_similarity(self, fv: torch.Tensor, ft: torch.Tensor, grid: Tuple[int, int],
                         windows: Optional[torch.Tensor]) -> torch.Tensor:
        """The similarities a band reads, flat [B, *]: with ``windows`` (:meth:`_band_indices`),
        for each block of BAND_BLOCK_ROWS visible grid rows, its products with the thermal rows
        within ``band`` rows of the block, one batched matmul; without (a band as tall as the
        grid), the whole [N, N] matrix. Why blocks: the whole matrix computed 40 thermal rows
        for each visible row where the band reads 11 (416x320, band 5). Written by hand: a
        windowed correlation over a 2-D grid of tokens is no op ONNX, OpenVINO or TensorRT have."""
        b, n, c = fv.shape
        if windows is None:
            return (fv @ ft.transpose(1, 2)).reshape(b, n * n)
        gh, gw = grid
        rows, blocks = self.BAND_BLOCK_ROWS, windows.shape[0]
        fv_blocks = torch.cat([fv, fv.new_zeros(b, blocks * rows * gw - n, c)], 1).reshape(b, blocks, rows * gw, c)
        # Thermal rows padded by the band above and below, and each block's window of them.
        pad = ft.new_zeros(b, self.band * gw, c)
        ft_pad = torch.cat([pad, ft, pad, ft.new_zeros(b, (blocks * rows - gh) * gw, c)], 1)
        return (fv_blocks @ ft_pad[:, windows].transpose(2, 3)).reshape(b, -1)

    def _band_indices(self, grid: Tuple[int, int], device):
        """:func:`band_cells`; the flat positions in :meth:`_band_similarity`'s output of each
        band's row (visible cell i against the thermal cells of its band) and column (thermal
        cell j against the visible cells of its band); and each block's window of padded thermal
        cells, [blocks, window cells] (None when the band is as tall as the grid: the whole matrix
        is no more work). Made once per grid and device (a stream calls this every frame)."""
        key = (tuple(grid), self.band, str(device))
        if key not in self._band_cache:
            with torch.inference_mode(False):  # plain tensors: usable outside inference mode too
                self._band_cache[key] = tuple(None if t is None else t.to(device)
                                              for t in self._make_band_indices(grid))
        return self._band_cache[key]

    def _make_band_indices(self, grid: Tuple[int, int]):
        gh, gw = grid
        idx, ok = band_cells(grid, self.band)
        n = idx.shape[0]
        cells = torch.arange(n).unsqueeze(1)
        rows, r = self.BAND_BLOCK_ROWS, self.band
        span = rows + 2 * r  # thermal rows in a block's window
        if span >= gh:
            return idx, ok, (cells * n + idx).reshape(-1), (idx * n + cells).reshape(-1), None

        def flat(vis: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
            """Position of (visible cell, thermal cell) in the blocks' products, 0 outside a band."""
            block, local = torch.div(vis // gw, rows, rounding_mode="floor"), vis % (rows * gw)
            th_row = th // gw - block * rows + r  # the thermal row within the block's window
            pos = (block * (rows * gw) + local) * (span * gw) + th_row * gw + th % gw
            return torch.where(ok, pos, torch.zeros_like(pos)).reshape(-1)

        # The block count lives only in windows' shape, so an export never divides a traced shape
        # (its integer division truncates: -(-34 // 4) once exported as 8 blocks, not 9).
        blocks = (gh + rows - 1) // rows
        windows = torch.arange(blocks).unsqueeze(1) * rows * gw + torch.arange(span * gw)  # [blocks, span*gw]
        return idx, ok, flat(cells.expand_as(idx), idx), flat(idx, cells.expand_as(idx)), windows

    def _row_max(self, x: torch.Tensor):
        """Max and first argmax over the last axis. ``argmax_by_compare``: the index as the
        smallest position holding the max (a compare and a min-reduction), the same numbers;
        an export for OpenVINO sets it, whose CPU plugin runs ArgMax as a TopK that took 20 ms on
        a 2080x2080 matrix against 6 ms this way (ONNX Runtime: 4 ms for ArgMax, 13 this way)."""
        if not self.argmax_by_compare:
            return x.max(dim=2)
        best = x.amax(dim=2, keepdim=True)
        n = x.shape[2]
        pos = torch.arange(n, device=x.device, dtype=x.dtype)
        idx = torch.where(x >= best, pos, torch.full_like(pos, float(n))).amin(dim=2)
        return best.squeeze(2), idx.to(torch.int64)

    @classmethod
    def select(cls, conf: torch.Tensor, threshold: float, k: int):
        """Mutual nearest neighbours above ``threshold``; returns the K best as fixed-size tensors.

        Returns idx_v [B,K] (visible cell), idx_t [B,K] (thermal cell), scores [B,K], valid [B,K].
        """
        row_val, row_idx = conf.max(dim=2)          # best thermal cell for each visible cell
        col_val = conf.amax(dim=1)                   # best confidence in each thermal cell's column
        return cls._top_mutual(row_val, row_idx, col_val, threshold, k)

    @staticmethod
    def _top_mutual(row_val, row_idx, col_val, threshold: float, k: int):
        k = min(k, row_val.shape[1])
        # Mutual: the row's best is also its column's best. Comparing values instead of taking a
        # column argmax avoids a strided arg-reduction that cost more than the matmul on CPU.
        ok = (torch.gather(col_val, 1, row_idx) <= row_val) & (row_val > threshold)
        score = torch.where(ok, row_val, torch.zeros_like(row_val))
        top_val, idx_v = torch.topk(score, k, dim=1)
        idx_t = torch.gather(row_idx, 1, idx_v)
        return idx_v, idx_t, top_val, top_val > 0
