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
parts (coefficients @ basis) replace it. Exact up to float rounding.

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
            rec = LayerRecord(conv.weight.detach(), conv.dilation[0],
                              conv_radius(conv))
            u = z
            if isinstance(norm, nn.GroupNorm):
                g = norm.num_groups
                zr = z.reshape(g, -1)
                mean = zr.mean(-1, keepdim=True)
                rstd = torch.rsqrt(zr.var(-1, unbiased=False, keepdim=True)
                                   + norm.eps)
                xhat = ((zr - mean) * rstd).reshape(z.shape[1:])
                gamma = norm.weight.detach()
                rec.gn = (gamma, rstd.flatten(), xhat)
                rec.scale = gamma * rstd.flatten().repeat_interleave(
                    z.shape[1] // g)
                u = norm(z)
            elif norm is not None:  # eval BatchNorm
                rec.scale = (norm.weight / torch.sqrt(norm.running_var +
                                                      norm.eps)).detach()
                u = norm(z)
            x = u if act is None else act(u)
            if act is not None:
                rec.mask = (x[0] > 0).to(x.dtype)
            recs.append(rec)
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
        the map; coefficients (n, K) and basis (K, C_in, h, w): gradient =
        window + coefficients @ basis.
    """
    n = win.shape[0]
    r = (win.shape[-1] - 1) // 2
    win = win * _inside(cells, hw, r, win.dtype)
    coef = win.new_zeros(n, 0)
    basis = win.new_zeros(0, win.shape[1], *hw)
    count_hw = hw[0] * hw[1]
    for rec in reversed(recs):
        if basis.shape[0] > n:  # fewer candidates than basis maps
            basis = (coef @ basis.flatten(1)).view(n, *basis.shape[1:])
            coef = torch.eye(n, dtype=win.dtype, device=win.device)
        if rec.mask is not None:
            win = win * gather_windows(rec.mask, cells, hw[1], r)
            basis = basis * rec.mask
        new_maps = None
        if rec.gn is not None:
            gamma, rstd, xhat = rec.gn
            g = rstd.numel()
            count = xhat.shape[0] // g * count_hw
            xw = gather_windows(xhat, cells, hw[1], r)
            vw = win * gamma[:, None, None]
            vb = basis * gamma[:, None, None]
            a1 = _group_means(vw, g, count) + coef @ _group_means(vb, g,
                                                                  count)
            a2 = _group_means(vw * xw, g, count) + coef @ _group_means(
                vb * xhat, g, count)
            coef = torch.cat([coef, -a1, -a2], 1)
            new_maps = _basis_conv_t(rec, hw)
        if rec.scale is not None:
            win = win * rec.scale[:, None, None]
            basis = basis * rec.scale[:, None, None]
        win = F.conv_transpose2d(win, rec.weight, dilation=rec.dilation)
        r += rec.radius
        win = win * _inside(cells, hw, r, win.dtype)
        if basis.shape[0]:
            basis = F.conv_transpose2d(basis, rec.weight, padding=rec.radius,
                                       dilation=rec.dilation)
        else:
            basis = basis.new_zeros(0, rec.weight.shape[1], *hw)
        if new_maps is not None:
            basis = torch.cat([basis, new_maps])
    return win, coef, basis


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


def dense_grads(win: Tensor, coef: Tensor, basis: Tensor, cells: Tensor,
                rows: Tensor) -> Tensor:
    """Full-map gradients (m, C, h, w) of candidates ``rows`` from
    :func:`tower_backward`'s windows, coefficients and basis."""
    h, w = basis.shape[-2:]
    out = (coef[rows] @ basis.flatten(1)).view(len(rows), *basis.shape[1:])
    r = (win.shape[-1] - 1) // 2
    for j, i in enumerate(rows.tolist()):
        y, x = divmod(int(cells[i]), w)
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), \
            min(x + r + 1, w)
        out[j, :, y0:y1, x0:x1] += win[i, :, y0 - y + r:y1 - y + r,
                                       x0 - x + r:x1 - x + r]
    return out


def level_tower_grads(towers, x: Tensor, cells: Tensor, coefs: dict,
                      chunk: int):
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
        recs, _ = record_tower(layers, x)
        win = torch.cat([pred_windows(list(zip(coefs[t][ti], preds)))
                         for t in owners])
        cells_all = cells.repeat(len(owners))
        win, coef, basis = tower_backward(recs, win, cells_all, hw)
        for j, t in enumerate(owners):
            parts[t].append((win, coef, basis, cells_all, j * n))
    chunk = max(int(chunk), 1)
    for t in coefs:
        for start in range(0, n, chunk):
            idx = torch.arange(start, min(start + chunk, n),
                               device=cells.device)
            g = x.new_zeros(len(idx), *x.shape[1:])
            for win, coef, basis, cells_all, off in parts[t]:
                g = g + dense_grads(win, coef, basis, cells_all, idx + off)
            yield t, idx, g


def tower_costs(layers: Sequence[nn.Module], n: int) -> Tuple[int, int]:
    """Full-map ``conv^T`` counts of the tower path and of one backward per
    row, for ``n`` rows through ``layers``: ``(tower, per_row)``.

    The tower path pays, per layer, the basis (at most ``n`` maps) plus
    about two for the new GroupNorm maps; one backward per row pays one per
    layer and row. With few rows the basis is no cheaper and its
    bookkeeping costs more, so callers take it only where it is clearly
    cheaper (:func:`level_tower_grads` callers: below half).
    """
    k = cost = 0
    for layer in reversed(list(layers)):
        _, norm, _ = _parts(layer)
        k = min(k, n)
        cost += k
        if isinstance(norm, nn.GroupNorm):
            cost += 2
            k += 2 * norm.num_groups
    return cost, n * len(layers)
