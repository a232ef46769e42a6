"""Exact gradients of many candidates through GroupNorm conv towers at once:
a local window per candidate plus a dense basis shared by all of them.

A tower layer (input first) is ``z = conv(h_prev)``, ``u = norm(z)``,
``h = act(u)``. The backward of one candidate's gradient:

* act: ``du = M * dh`` with ``M = act'(u)`` (local);
* norm: GroupNorm ``dz = r (v - mean_g(v) - x^ mean_g(v x^))`` with
  ``v = gamma du``, ``r = 1 / sigma_g``, ``x^`` the normalised input; that is
  the local ``r v`` minus, per group, ``mean_g(v)`` times the map
  ``r 1_g`` and ``mean_g(v x^)`` times the map ``r x^_g``. Eval-mode
  BatchNorm or no norm: local;
* conv: ``dh_prev = conv^T(dz)`` (local: the window grows by the radius).

The two means are sums over the candidate's own window (divided by the
group's size), so the non-local part of every candidate lies in the span of
2G fixed maps per GN layer. Each candidate's gradient is therefore its
window (exact, grown layer by layer) plus coefficients on a dense basis that
all candidates of the level share: the basis goes through the lower layers
once, not once per candidate, and ``conv^T`` of ``r 1_g`` / ``r x^_g`` costs
1 / G of a full one each (only the group's channels are non-zero). Where the
basis holds more maps than there are candidates, the candidates' own dense
parts (coefficients @ basis) replace it, and later layers' GroupNorm terms
go straight into those parts. Exact up to float rounding.

Layers are duck-typed on mmcv's ``ConvModule`` (``conv``, ``norm``,
``activate``, ``order``): plain ``nn.Conv2d`` (stride 1, 'same' padding, one
group), ``nn.GroupNorm`` (affine) / eval ``BatchNorm2d`` / none, ``ReLU`` /
none. :func:`tower_supported` says whether a tower qualifies.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LayerRecord:
    """What the backward of one tower layer needs (one image, one level).

    Attributes:
        weight (Tensor): conv weight (C_out, C_in, k, k).
        dilation (int): conv dilation.
        radius (int): conv radius ``(k - 1) / 2 * dilation``.
        mask (Tensor, optional): (C_out, h, w) activation derivative.
        scale (Tensor, optional): (C_out,) local norm scale (GN:
            gamma / sigma_g; BN: gamma / sqrt(var + eps)).
        gn (tuple, optional): GroupNorm ``(gamma (C,), rstd (G,),
            xhat (C, h, w))``.
    """
    weight: Tensor
    dilation: int
    radius: int
    mask: Optional[Tensor] = None
    scale: Optional[Tensor] = None
    gn: Optional[Tuple[Tensor, Tensor, Tensor]] = None


def conv_radius(conv) -> Optional[int]:
    """Radius of a stride-1 'same' square one-group ``nn.Conv2d``, else
    None."""
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        return None
    k, d, s, p = conv.kernel_size, conv.dilation, conv.stride, conv.padding
    if k[0] != k[1] or d[0] != d[1] or s != (1, 1) or k[0] % 2 == 0 or \
            p != ((k[0] - 1) // 2 * d[0], ) * 2:
        return None
    return (k[0] - 1) // 2 * d[0]


def _parts(layer):
    """(conv, norm or None, act or None) of a ConvModule-like layer."""
    if tuple(getattr(layer, 'order', ())) != ('conv', 'norm', 'act'):
        raise NotImplementedError('layer order must be conv, norm, act')
    norm = layer.norm if getattr(layer, 'with_norm', False) else None
    act = layer.activate if getattr(layer, 'with_activation', False) \
        else None
    return layer.conv, norm, act


def tower_supported(layers: Sequence[nn.Module]) -> bool:
    """Whether :func:`record_tower` handles every layer of ``layers``."""
    try:
        for layer in layers:
            conv, norm, act = _parts(layer)
            if conv_radius(conv) is None:
                return False
            if norm is not None and not (
                    (isinstance(norm, nn.GroupNorm) and norm.affine) or
                    (isinstance(norm, nn.BatchNorm2d) and not norm.training
                     and norm.track_running_stats)):
                return False
            if act is not None and type(act) is not nn.ReLU:
                return False
    except (AttributeError, NotImplementedError):
        return False
    return True


def layer_record(layer: nn.Module, z: Tensor, out: Tensor) -> LayerRecord:
    """Backward record of one tower layer from its forward on one image.

    Args:
        layer: a layer :func:`tower_supported` accepts.
        z (Tensor): (1, C, h, w) its conv's output (before the norm).
        out (Tensor): (1, C, h, w) its output (after the activation).
    """
    conv, norm, act = _parts(layer)
    rec = LayerRecord(conv.weight.detach(), conv.dilation[0],
                      conv_radius(conv))
    with torch.no_grad():
        if isinstance(norm, nn.GroupNorm):
            g = norm.num_groups
            zr = z.detach().reshape(g, -1)
            mean = zr.mean(-1, keepdim=True)
            rstd = torch.rsqrt(zr.var(-1, unbiased=False, keepdim=True) +
                               norm.eps)
            xhat = ((zr - mean) * rstd).reshape(z.shape[1:])
            gamma = norm.weight.detach()
            rec.gn = (gamma, rstd.flatten(), xhat)
            rec.scale = gamma * rstd.flatten().repeat_interleave(
                z.shape[1] // g)
        elif norm is not None:  # eval BatchNorm
            rec.scale = (norm.weight /
                         torch.sqrt(norm.running_var + norm.eps)).detach()
        if act is not None:
            rec.mask = (out.detach()[0] > 0).to(out.dtype)
    return rec


def record_tower(layers: Sequence[nn.Module],
                 x: Tensor) -> Tuple[List[LayerRecord], Tensor]:
    """Run a tower on one image's level map and keep its backward records.

    Args:
        layers: tower layers, input first (see :func:`tower_supported`).
        x (Tensor): (1, C, h, w) level map.

    Returns:
        tuple: records (input first) and the tower output (1, C', h, w).
    """
    recs = []
    with torch.no_grad():
        for layer in layers:
            conv, norm, act = _parts(layer)
            z = conv(x)
            u = z if norm is None else norm(z)
            x = u if act is None else act(u)
            recs.append(layer_record(layer, z, x))
    return recs, x


def gather_windows(full: Tensor, cells: Tensor, width: int,
                   radius: int) -> Tensor:
    """Windows of a (C, h, w) map around flat cells, zero outside.

    Returns:
        Tensor: (n, C, 2 radius + 1, 2 radius + 1).
    """
    s = 2 * radius + 1
    fp = F.pad(full, (radius, ) * 4)
    ar = torch.arange(s, device=cells.device)
    ys = (cells // width)[:, None] + ar
    xs = (cells % width)[:, None] + ar
    return fp[:, ys[:, :, None], xs[:, None, :]].permute(1, 0, 2, 3)


def _inside(cells, hw, radius, dtype):
    ones = torch.ones(1, *hw, dtype=dtype, device=cells.device)
    return gather_windows(ones, cells, hw[1], radius)


def _group_means(v: Tensor, groups: int, count: int) -> Tensor:
    """(n, C, ...) -> (n, G) group sums / count."""
    per = 1
    for d in v.shape[1:]:
        per *= d
    return v.reshape(v.shape[0], groups, per // groups).sum(
        -1) / count


def _basis_conv_t(rec: LayerRecord, hw) -> Tensor:
    """conv^T of the 2G GroupNorm maps ``r 1_g`` then ``r x^_g``, group by
    group (only the group's channels are non-zero): the cost of two full
    ``conv^T`` (a grouped ``conv_transpose2d`` is slower on CPU).

    Returns:
        Tensor: (2G, C_in, h, w).
    """
    gamma, rstd, xhat = rec.gn
    g = rstd.numel()
    cg = xhat.shape[0] // g
    out = xhat.new_empty(2, g, rec.weight.shape[1], *hw)
    for k in range(g):
        sl = slice(k * cg, (k + 1) * cg)
        inp = torch.stack([torch.full_like(xhat[sl], float(rstd[k])),
                           xhat[sl] * rstd[k]])
        out[:, k] = F.conv_transpose2d(inp, rec.weight[sl],
                                       padding=rec.radius,
                                       dilation=rec.dilation)
    return out.flatten(0, 1)


#: conv^T of a layer's 2G GroupNorm maps (:func:`_basis_conv_t`) costs
#: about this many full-map conv^T (measured on the CPU: it writes 2G full
#: maps, memory-bound)
BASIS_MAPS_COST = 8


@dataclass
class DenseBasis:
    """The non-local part of n candidates' gradients, ``sum_i coefs[i] @
    maps[i]``, kept as blocks (one per GroupNorm layer, or one block of the
    candidates' own dense parts) so that no step copies the maps into a
    bigger tensor.

    Attributes:
        coefs (list): (n, K_i) coefficients; None: the identity (the block
            holds the n candidates' own dense parts).
        maps (list[Tensor]): (K_i, C, h, w) maps, owned (updated in place).
    """
    coefs: List[Optional[Tensor]]
    maps: List[Tensor]

    @property
    def size(self) -> int:
        return sum(m.shape[0] for m in self.maps)

    @property
    def own(self) -> bool:
        """Whether the basis is the candidates' own dense parts."""
        return len(self.maps) == 1 and self.coefs[0] is None

    def combine(self, rows: Optional[Tensor] = None) -> Tensor:
        """Dense parts (m, C, h, w) of candidates ``rows`` (all: None)."""
        out = None
        for c, m in zip(self.coefs, self.maps):
            if c is None:  # (an indexed part is a copy already)
                part = m.flatten(1).clone() if rows is None else \
                    m[rows].flatten(1)
                out = part if out is None else out.add_(part)
                continue
            c = c if rows is None else c[rows]
            flat = m.flatten(1)
            out = c @ flat if out is None else out.addmm_(c, flat)
        return out.view(-1, *self.maps[0].shape[1:])

    def group_means(self, weight: Tensor, gamma: Tensor, groups: int,
                    count: int) -> Tensor:
        """(n, G) group sums / count of ``gamma * weight *`` the dense
        parts (``weight`` (C, h, w))."""
        out = 0
        for c, m in zip(self.coefs, self.maps):
            gm = _group_means(_masked_sums(m, weight) * gamma, groups, count)
            out = out + (gm if c is None else c @ gm)
        return out


def _masked_sums(maps: Tensor, weight: Tensor) -> Tensor:
    """(K, C, h, w), (C, h, w) -> (K, C): per-channel sums of maps * weight
    (no (K, C, h, w) temporary)."""
    k, c = maps.shape[:2]
    return torch.bmm(maps.view(k, c, -1).transpose(0, 1),
                     weight.reshape(c, -1, 1)).view(c, k).t()


def _gn_terms_direct(n: int, a1: Tensor, a2: Tensor, rec: LayerRecord,
                     own: Optional[Tensor]) -> Tensor:
    """Add the GroupNorm terms ``-a1_g r_g 1_g - a2_g r_g x^_g`` of n
    candidates to their own dense parts ``own`` (n, C, h, w; None: zeros),
    in place; returns them."""
    gamma, rstd, xhat = rec.gn
    cg = xhat.shape[0] // rstd.numel()
    b1 = (-a1 * rstd).repeat_interleave(cg, 1)[:, :, None, None]
    b2 = (-a2 * rstd).repeat_interleave(cg, 1)[:, :, None, None]
    if own is None:
        own = b1.expand(n, *xhat.shape).clone()
    else:
        own.add_(b1)
    return own.addcmul_(b2, xhat)


def _take_direct(basis: DenseBasis, n: int) -> bool:
    """Whether a GroupNorm layer's terms go into the candidates' own dense
    parts (no 2G-map basis block): they are kept already, or there are none
    yet and fewer candidates than the basis block would cost."""
    return basis.own or (basis.size == 0 and n <= BASIS_MAPS_COST)


#: full-map conv^T run on about this many input elements at a time: a
#: large batch of level maps no longer fits the caches (measured on the
#: CPU, 256-channel 64x64 maps: 24 ms per map one at a time, 28 ms four at
#: a time, 39-42 ms in a batch of 192; FCOS R50 100 detections x 5
#: targets: 31-32 s in chunks of 4 such maps, 34-37 s unchunked)
CONV_T_CHUNK_ELEMS = 2**22


def _full_conv_t(maps: Tensor, rec: LayerRecord) -> Tensor:
    """'same' conv^T of (K, C_out, h, w) full maps, a few at a time."""
    chunk = max(1, CONV_T_CHUNK_ELEMS // maps[0].numel()) if len(maps) \
        else 1
    if maps.shape[0] <= chunk:
        return F.conv_transpose2d(maps, rec.weight, padding=rec.radius,
                                  dilation=rec.dilation)
    shape = (maps.shape[0], rec.weight.shape[1], *maps.shape[-2:])
    # the maps are owned: a chunk's output takes its input's place (no new
    # level-sized buffer to fault in; measured 8 % of the FCOS R50 call)
    out = maps if maps.shape == shape else maps.new_empty(shape)
    for i in range(0, maps.shape[0], chunk):
        out[i:i + chunk] = F.conv_transpose2d(
            maps[i:i + chunk], rec.weight, padding=rec.radius,
            dilation=rec.dilation)
    return out


def tower_backward(recs: Sequence[LayerRecord], win: Tensor, cells: Tensor,
                   hw: Tuple[int, int]):
    """Exact backward of candidates' tower-output gradients to the input.

    Args:
        recs: :func:`record_tower` records, input first.
        win (Tensor): (n, C, s, s) gradient w.r.t. the tower output, on
            windows centred on ``cells`` (s odd).
        cells (Tensor): (n,) flat cells ``y * w + x``.
        hw (tuple): (h, w) of the level.

    Returns:
        tuple: windows (n, C_in, s', s') centred on the cells, zero outside
        the map, and the :class:`DenseBasis` of the non-local part:
        gradient = window + basis.
    """
    n = win.shape[0]
    r = (win.shape[-1] - 1) // 2
    win = win * _inside(cells, hw, r, win.dtype)
    basis = DenseBasis([], [])
    count_hw = hw[0] * hw[1]
    for rec in reversed(recs):
        if basis.size > n:  # fewer candidates than basis maps
            basis = DenseBasis([None], [basis.combine()])
        if rec.mask is not None:
            win = win * gather_windows(rec.mask, cells, hw[1], r)
        new = None
        if rec.gn is not None:
            gamma, rstd, xhat = rec.gn
            g = rstd.numel()
            count = xhat.shape[0] // g * count_hw
            xw = gather_windows(xhat, cells, hw[1], r)
            vw = win * gamma[:, None, None]
            a1 = _group_means(vw, g, count)
            a2 = _group_means(vw * xw, g, count)
            if basis.maps:  # the dense parts' masked group sums
                ones = torch.ones_like(xhat) if rec.mask is None \
                    else rec.mask
                wx = xhat if rec.mask is None else rec.mask * xhat
                a1 = a1 + basis.group_means(ones, gamma, g, count)
                a2 = a2 + basis.group_means(wx, gamma, g, count)
            new = (a1, a2)
        factor = rec.mask
        if rec.scale is not None:
            win = win * rec.scale[:, None, None]
            factor = rec.scale[:, None, None] if factor is None else \
                factor * rec.scale[:, None, None]
        win = F.conv_transpose2d(win, rec.weight, dilation=rec.dilation)
        r += rec.radius
        win = win * _inside(cells, hw, r, win.dtype)
        if factor is not None:
            for m in basis.maps:
                m.mul_(factor)
        extra = None
        if new is not None:
            if _take_direct(basis, n):
                own = _gn_terms_direct(n, *new, rec,
                                       basis.maps[0] if basis.own else None)
                basis = DenseBasis([None], [own])
            else:
                extra = (torch.cat([-new[0], -new[1]], 1),
                         _basis_conv_t(rec, hw))
        basis = DenseBasis(list(basis.coefs),
                           [_full_conv_t(m, rec) for m in basis.maps])
        if extra is not None:
            basis.coefs.append(extra[0])
            basis.maps.append(extra[1])
    return win, basis


def pred_windows(coefs: Sequence[Tuple[Tensor, nn.Conv2d]]) -> Tensor:
    """Gradient w.r.t. a tower output from prediction-conv output
    gradients at the candidates' cells.

    Args:
        coefs: ``(grad (n, C_out), conv)`` per prediction conv reading the
            tower (stride-1 'same' convs).

    Returns:
        Tensor: (n, C, s, s) windows, s = 2 max radius + 1.
    """
    rmax = max(conv_radius(c) for _, c in coefs)
    out = 0
    for g, conv in coefs:
        w = F.conv_transpose2d(g[:, :, None, None], conv.weight.detach(),
                               dilation=conv.dilation[0])
        p = rmax - conv_radius(conv)
        out = out + F.pad(w, (p, ) * 4)
    return out


def add_windows(out: Tensor, win: Tensor, cells: Tensor) -> Tensor:
    """Add each row's window (m, C, s, s), centred on its flat cell, into
    the full maps ``out`` (m, C, h, w) in place (cropped at the border)."""
    h, w = out.shape[-2:]
    r = (win.shape[-1] - 1) // 2
    for j, c in enumerate(cells.tolist()):
        y, x = divmod(int(c), w)
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), \
            min(x + r + 1, w)
        out[j, :, y0:y1, x0:x1] += win[j, :, y0 - y + r:y1 - y + r,
                                       x0 - x + r:x1 - x + r]
    return out


#: at most this many rows (and about this many elements) per product of
#: the coefficients with the basis in :func:`level_tower_grads`
COMBINE_ROWS = 64
COMBINE_ELEMS = 2**26


def level_tower_grads(towers, x: Tensor, cells: Tensor, coefs: dict,
                      chunk: int, records: Optional[Sequence] = None):
    """Exact gradients w.r.t. one image's level map of every candidate and
    target, through the head's towers.

    Args:
        towers (list): ``(layers, pred_convs)`` per tower: its layers (input
            first, see :func:`tower_supported`) and the prediction convs
            reading its output.
        x (Tensor): (1, C, h, w) level map.
        cells (Tensor): (n,) flat cells of the candidates.
        coefs (dict): target -> per tower, None (the target does not use
            it) or one (n, C_out) gradient per prediction conv of the tower
            w.r.t. that conv's output at the candidates' cells.
        chunk (int): candidates per yielded block.
        records (list, optional): per tower, its :func:`layer_record` list
            from the caller's forward (None: the tower runs again).

    Yields:
        tuple: ``target, idx (m,), grads (m, C, h, w)``.
    """
    hw = tuple(x.shape[-2:])
    n = cells.shape[0]
    parts = {t: [] for t in coefs}
    for ti, (layers, preds) in enumerate(towers):
        owners = [t for t in coefs if coefs[t][ti] is not None]
        if not owners:
            continue
        recs = record_tower(layers, x)[0] if records is None else \
            records[ti]
        win = torch.cat([pred_windows(list(zip(coefs[t][ti], preds)))
                         for t in owners])
        win, basis = tower_backward(recs, win, cells.repeat(len(owners)),
                                    hw)
        for j, t in enumerate(owners):
            parts[t].append((win, basis, j * n))
    chunk = max(int(chunk), 1)
    # rows per product of coefficients with the basis: a few rows at a
    # time would re-read every basis map for each chunk (memory-bound)
    block = max(chunk, min(COMBINE_ROWS, COMBINE_ELEMS // x[0].numel()))
    for t in coefs:
        for start in range(0, n, block):
            rows = torch.arange(start, min(start + block, n),
                                device=cells.device)
            g = None
            for win, basis, off in parts[t]:
                if basis.maps:
                    part = basis.combine(rows + off)
                    g = part if g is None else g.add_(part)
            if g is None:
                g = x.new_zeros(len(rows), *x.shape[1:])
            for win, basis, off in parts[t]:
                add_windows(g, win[rows + off], cells[rows])
            for s in range(0, len(rows), chunk):
                yield t, rows[s:s + chunk], g[s:s + chunk]


def tower_costs(layers: Sequence[nn.Module], n: int) -> Tuple[int, int]:
    """Full-map ``conv^T`` counts of the tower path and of one backward per
    row, for ``n`` rows through ``layers``: ``(tower, per_row)``.

    The tower path (:func:`tower_backward`) pays, per layer, one per basis
    map (at most ``n``: beyond, the rows' own dense parts replace the basis)
    plus :data:`BASIS_MAPS_COST` for a GroupNorm layer's 2G new maps, or
    nothing extra where the layer's terms go into the rows' own dense parts;
    one backward per row pays one per layer and row (and a full-map
    prediction conv^T, not counted).
    """
    k = cost = 0
    own = False
    for layer in reversed(list(layers)):
        _, norm, _ = _parts(layer)
        if k > n:
            k, own = n, True
        gn = isinstance(norm, nn.GroupNorm)
        if gn and (own or (k == 0 and n <= BASIS_MAPS_COST)):
            k, own = n, True
        cost += k
        if gn and not own:
            cost += BASIS_MAPS_COST
            k += 2 * norm.num_groups
    return cost, n * len(layers)
