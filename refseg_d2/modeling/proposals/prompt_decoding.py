"""
SAM 2 prompt decoding that shares the image-side work between prompts
(``MODEL.REFSEG.SAM2.DECODER "shared"``). It runs SAM 2's own modules and weights (the mask
decoder's two-way transformer, norms, MLPs, upscaling, hypernetworks and IoU head) and gives the
official decoder's mask logits and predicted IoUs up to float rounding (tested to 1e-4 on
random weights against ``MaskDecoder.forward``).

Notation (one image, one chunk of B prompts): X (N, C) the image tokens, i.e. the 64 x 64
embedding plus the dense prompt embedding (the no-mask embedding: identical for every prompt,
since no mask is given), P (N, C) the positional encoding; N = e * e, C = 256. A prompt has
T tokens (the object-score, IoU and 4 mask tokens, then 2 point or box-corner tokens; T = 8).
An attention layer has H heads of width d (internal width D = H d = 128), projections
W_q, W_k, W_v (D x C) with biases b_q, b_k, b_v, W_o (C x D) with b_o; W_*,h are the d rows
(of W_o: the d columns) of head h, s = d ** -0.5 the softmax scale.

What is exact algebra here, and what is shared:

1. Layer 0 sees the same image tokens X for every prompt (they are updated only at the end
   of the layer). Its token-to-image keys (X + P) W_k^T + b_k, values X W_v^T + b_v and its
   image-to-token queries (X + P) W_q^T + b_q are computed ONCE per image; all prompts' token
   queries attend to them as one (B T)-row query set.
2. Image-to-token attention (layers 0 and 1; queries = N image tokens, keys/values = the T
   tokens of a prompt). The output projection is folded into the values of the few tokens:
       out = sum_h A_h (v W_v,h^T + b_v,h) W_o,h^T + b_o = [A_1 .. A_H] (N x H T) @ V' + b_o,
   V' = stacked (v W_v,h^T + b_v,h) W_o,h^T (H T x C), so no (N x D) tensor is formed.
   In layer >= 1 the image tokens Y differ per prompt; the query projection is folded into
   the keys of the tokens:
       s ((Y+P) W_q,h^T + b_q,h) k_h^T = (Y+P) (s k_h W_q,h)^T + s b_q,h k_h^T,
   the second term a per-key bias (kept: the softmax runs over the keys).
3. Token-to-image attention with per-prompt image tokens Y (layer >= 1 and the final
   attention; queries = T tokens q_h = q W_q,h^T + b_q,h, keys Y + P, values Y):
       scores_h = (s q_h W_k,h) (Y + P)^T + s q_h b_k,h^T 1^T; the last term is constant along
   the keys of each query, so softmax drops it exactly. Values: the softmax rows sum to one, so
       A_h (Y W_v,h^T + b_v,h) = (A_h Y) W_v,h^T + b_v,h,
   i.e. the (H T x N) weights multiply Y itself and only H T rows get projected; with Y
   factored (section 4), A_h Y W_v,h^T = (A_h diag(a)) (S W_v,h^T) + (A_h F^T) (E W_v,h^T).
4. Per-prompt image tokens stay low-rank. After layer 0 a prompt's image tokens are
   LN(X + W V') (section 2), W = [A_1 .. A_H] (N x H T): the shared tokens plus an update of
   rank <= H T, through a LayerNorm, which per token is an affine map. So they are held as
       Y_b = diag(a_b) S + F_b^T E_b,   S (N x C) shared, a_b (N), F_b (r x N), E_b (r x C),
   (``LowRankTokens``; S = X and a = 1 before the first LayerNorm, r = H T + 2 after it,
   2 (H T + 2) after layer 1) and never formed. Any linear map L that follows splits into a
   once-per-image product and a low-rank one:
       Y_b L = diag(a_b) (S L) + F_b^T (E_b L),
   which serves the K/V projections of the later token-to-image attentions and the queries of
   the later image-to-token attention (sections 2, 3, with the per-head query or key folded
   in: F_b^T (E_b W_h^T q_h^T), N x H T per prompt), and the first transposed convolution of
   the upscaling (section 6). A new update appends its H T rows (W^T, V') to F, E.
5. LayerNorm of Z = diag(a) S + F^T E (norm weight g, bias beta), from the factors: with S_c,
   E_c each row minus its mean,
       mean_n = a_n mean(S_n) + F_n^T mean(E),
       C var_n = a_n^2 |S_c,n|^2 + 2 a_n S_c,n . (F_n^T E_c) + F_n^T (E_c E_c^T) F_n,
   (centred terms: no large squares cancel in fp32), and then
       LN(Z) = diag(a / std) (S * g) + [F / std; -mean / std; 1]^T [E * g; g; beta],
   so the shared tokens become S * g (once per image) and the rank grows by 2. The cross term
   uses the rows of an update, (v_h W_o,h^T + b_o / H) * g..: S_c times the centred
   [W_o, b_o] * g.. is an (N x D + 1) product once per image, and per prompt only
   v_h (T x d) meets it (N x T x D), never an (N x C) tensor.
   Only the nonlinear steps run per prompt: the softmaxes, the per-token mean and variance,
   and, for kept prompts, the upscaling's LayerNorm, GELUs and second transposed convolution.
6. The predicted IoUs depend only on the tokens, so they are computed first (IoU head in fp32
   even under autocast); mask upscaling (the two transposed convolutions with the
   high-resolution features) and the hypernetwork product then run only for prompts that
   pass the filter, only for their chosen output token, and on tiles of tokens (every step of
   it is local to a token).

Multiply-accumulates per prompt at N = 64 x 64 (Hiera-T decoder, T = 8, H T = 64):
transformer ~0.28 G (layer 0 ~0.03 G, layer 1 ~0.14 G of which the second LayerNorm's
quadratic form 0.05 G, from the upper block triangle of its gram matrix; final attention
~0.09 G, token-only products ~0.03 G); upscaling of a kept prompt ~0.28 G (low-rank part
of the first transposed convolution 0.14 G, second one 0.13 G). Once per image ~2 G. (The
official decoder: ~1.3 G per prompt in the transformer
and ~0.4 G of upscaling for each of its four masks.) Rounding differs from the official
decoder (sums in another order); ties in predicted IoU are broken as ``argmax`` does (first
max).

Shapes: B prompts of a chunk, T tokens, N = e * e image tokens, C channels, h x w = 4e x 4e
mask grid; K kept prompts; r the rank of the factored image tokens.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..precision import run_sensitive

# Per-prompt image tokens held at once (bounds memory: 2^17 tokens x 256 channels x 4 bytes =
# 128 MiB per tensor in fp32, e.g. 32 prompts at SAM 2's 64 x 64 embedding of a 1024 input).
IMAGE_TOKENS_PER_CHUNK = 1 << 17

# On a CPU, a smaller bound keeps a chunk's factored tokens (~1 KiB per image token and prompt)
# close to the caches: 8 prompts at 64 x 64 decoded ~25% faster than 24 on a 2-core CPU.
CPU_IMAGE_TOKENS_PER_CHUNK = 1 << 15

# Kept prompts' image tokens upscaled at once (prompts x tokens): every step of the upscaling is
# local to a token, so it runs on tiles of tokens whose intermediates (~3 KiB of mask-grid
# features per token) stay in cache.
UPSCALE_TOKENS_PER_TILE = 1 << 11


def _split(attn):
    """(H, d, s) of a SAM 2 ``Attention`` module."""
    h = attn.num_heads
    d = attn.internal_dim // h
    return h, d, d ** -0.5


def attend_shared_image(attn, q, keys, values):
    """
    Token-to-image attention against image keys/values shared by all prompts (section 1).

    Args:
        q: (B, T, C) token queries (with their positional embedding).
        keys, values: (H, N, d) the projected image keys and values.
    Returns:
        (B, T, C).
    """
    b, t, _ = q.shape
    h, d, _ = _split(attn)
    qh = attn.q_proj(q).reshape(b * t, h, d).transpose(0, 1)
    out = F.scaled_dot_product_attention(qh, keys.to(qh.dtype), values.to(qh.dtype))
    return attn.out_proj(out.transpose(0, 1).reshape(b, t, h * d))


def _heads(weight, inputs, h, bias=None):
    """(N, C) @ W^T (+ b) split into heads: (H, N, d)."""
    out = inputs @ weight.t().to(inputs.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(out.shape[0], h, -1).transpose(0, 1).contiguous()


class LowRankTokens(NamedTuple):
    """
    The per-prompt image tokens of a chunk in factored form (section 4): Y_b = diag(a_b) S +
    F_b^T E_b, with S (N, C) shared by the image (held in the context), a (B, N), F (B, r, N),
    E (B, r, C): the first ``rank`` rows of the buffers ``f_all`` (B, R, N) and ``e_all``
    (B, R, C), R the rank after the last layer, so that growing the rank copies nothing. Rows
    come in blocks, one per image-to-token update j (F: its attention weights W_j^T (H T, N)
    times a per-token scale c_j; E: its values V'_j), and in pairs added by each LayerNorm (E:
    its weight and bias, the same for every prompt; ``rows`` lists (index, (C,) row) of
    those). ``blocks`` holds (first row, c_j (B, N), v_j (B, H, T, d)) per update, v_j its
    values before the output projection.
    """

    a: torch.Tensor
    f_all: torch.Tensor
    e_all: torch.Tensor
    rank: int
    rows: list
    blocks: list

    @property
    def f(self):
        return self.f_all[:, : self.rank]

    @property
    def e(self):
        return self.e_all[:, : self.rank]


def add_update(y, weights, head_values, values, total_rank=None):
    """
    Y + W V' (an image-to-token update, see :func:`attend_lowrank_to_tokens`); ``y`` None
    stands for the shared image tokens themselves (a = 1, rank 0), and then ``total_rank``
    sizes the buffers.
    """
    b, r, n = weights.shape
    ones = weights.new_ones(b, n)
    if y is None:
        y = LowRankTokens(ones, weights.new_empty(b, total_rank, n),
                          values.new_empty(b, total_rank, values.shape[-1]), 0, [], [])
    y.f_all[:, y.rank : y.rank + r] = weights
    y.e_all[:, y.rank : y.rank + r] = values
    return y._replace(rank=y.rank + r, blocks=y.blocks + [(y.rank, ones, head_values)])


def norm_statistics(shared, bases, heads):
    """
    The per-image terms of :func:`norm_lowrank`.

    Args:
        shared: (N, C) the shared image tokens S; bases: per image-to-token update so far,
            (C, D + 1) its output projection [W_o, b_o] times the LayerNorm weights applied
            since; heads: H.
    Returns:
        dict: "mean_s" and "sq_s" (N,) the mean and centred sum of squares of each token,
        "sc" (N, C) S centred, "cross": per update S_c [W_o, b_o]_c (the basis centred over
        C) as (H, d, N) and (N,).
    """
    centred = shared - shared.mean(-1, keepdim=True)
    cross = []
    for basis in bases:
        proj = centred @ (basis - basis.mean(0)).to(centred.dtype)
        w = proj[:, :-1].reshape(proj.shape[0], heads, -1).permute(1, 2, 0).contiguous()
        cross.append((w, proj[:, -1].contiguous()))
    return {"mean_s": shared.mean(-1), "sq_s": (centred * centred).sum(-1), "sc": centred,
            "cross": cross}


def quadratic_form(gram, f):
    """
    f_n^T G f_n for every column n of f, from the upper block triangle of the symmetric G
    (rows split in halves A, B): f_A^T (G_AA f_A + 2 G_AB f_B) + f_B^T G_BB f_B, 3/4 of the
    products of G f.

    Args:
        gram: (B, r, r) symmetric; f: (B, r, N).
    Returns:
        (B, N).
    """
    h = gram.shape[1] // 2
    upper = torch.cat([gram[:, :h, :h], 2 * gram[:, :h, h:]], dim=2)
    quad = (torch.bmm(upper, f) * f[:, :h]).sum(1)
    return quad + (torch.bmm(gram[:, h:, h:], f[:, h:]) * f[:, h:]).sum(1)


def norm_lowrank(ln, y, stats):
    """
    LayerNorm of Z = diag(a) S + F^T E without forming Z (section 5). Mean and variance per
    token come from the factors, with centred rows (S_c, E_c: each row minus its mean) so that
    no large square cancels:
        mean_n = a_n mean(S_n) + F_n^T mean(E),
        C var_n = a_n^2 |S_c,n|^2 + 2 a_n S_c,n . (F_n^T E_c) + F_n^T (E_c E_c^T) F_n.
    In the cross term the rows of a block are E_c = (v_h W_c,h^T + b_c / H) (centred over C),
    so E_c S_c^T = v_h (S_c W_c,h)^T + (S_c b_c)^T / H from the image's S_c [W_c, b_c]
    (N x (D + 1)), and F^T E_c S_c^T = sum over the block's rows of F * (v_h (S_c W_c,h)^T)
    + c_j S_c b_c (each head's weights sum to one): no (N x C) tensor per prompt. Then
    LN(Z) = diag(a / std) (S * g) + [F / std; -mean / std; 1]^T
    [E * g; g; beta]: the shared tokens become S * g (the next entry of the context). The
    buffers of ``y`` are updated in place.

    Args:
        y: :class:`LowRankTokens` of Z; stats: from :func:`norm_statistics`.
    Returns:
        :class:`LowRankTokens` of LN(Z).
    """
    with torch.autocast(y.a.device.type, enabled=False):
        a, f, e = y.a.float(), y.f, y.e
        c = e.shape[-1]
        row_mean = e.float().mean(-1)
        mean = a * stats["mean_s"] + torch.bmm(row_mean[:, None], f.float())[:, 0]
        centred = e.float() - row_mean[..., None]
        quad = quadratic_form(torch.bmm(centred, centred.transpose(1, 2)), f.float())
        cross = torch.zeros_like(mean)
        if y.rows:
            index = [i for i, _ in y.rows]
            rows = torch.stack([row for _, row in y.rows]).float()
            rows_sc = (rows - rows.mean(-1, keepdim=True)) @ stats["sc"].float().t()
            cross = (f[:, index].float() * rows_sc).sum(1)
        for (start, scale, head_values), (w, bias) in zip(y.blocks, stats["cross"]):
            b, h, t, d = head_values.shape
            proj = torch.bmm(head_values.float().transpose(0, 1).reshape(h, b * t, d), w.float())
            weights = f[:, start : start + h * t].float().reshape(b, h, t, -1)
            cross = cross + (weights * proj.reshape(h, b, t, -1).transpose(0, 1)).sum((1, 2))
            cross = cross + scale * bias.float()
        var = (a * a * stats["sq_s"] + 2 * a * cross + quad) / c
        rstd = torch.rsqrt(var + ln.eps)
        g, beta = ln.weight, ln.bias
        r = y.rank
        f.mul_(rstd[:, None].to(f.dtype))
        y.f_all[:, r] = -mean * rstd
        y.f_all[:, r + 1] = 1
        e.mul_(g.to(e.dtype))
        y.e_all[:, r] = g
        y.e_all[:, r + 1] = beta
        rows = [(i, row * g) for i, row in y.rows] + [(r, g), (r + 1, beta)]
        blocks = [(start, scale * rstd, head_values) for start, scale, head_values in y.blocks]
        return y._replace(a=a * rstd, rank=r + 2, rows=rows, blocks=blocks)


def attend_tokens_to_lowrank(attn, q, y, shared):
    """
    Token-to-image attention against factored image tokens (sections 3 and 4). Keys
    (Y + P) W_k^T: the shared parts S W_k^T and P W_k^T are projected once per image, the
    low-rank part enters through (q_h W_k,h E_b^T) F_b (H T x N per prompt); b_k drops out
    of the softmax. Values: (A_h Y) W_v,h^T + b_v,h = (A_h diag(a)) (S W_v,h^T)
    + (A_h F^T) (E W_v,h^T) + b_v,h.

    Args:
        q: (B, T, C) token queries (with their positional embedding); y: :class:`LowRankTokens`.
        shared: "k_sp" (H, 2N, d) the heads of S W_k^T then P W_k^T, "v_s" (H, N, d) S W_v^T.
    Returns:
        (B, T, C).
    """
    b, t, c = q.shape
    h, d, scale = _split(attn)
    n = y.a.shape[1]
    qh = attn.q_proj(q).reshape(b, t, h, d) * scale
    dtype = qh.dtype
    f, e = y.f.to(dtype), y.e.to(dtype)
    shared_scores = torch.bmm(qh.permute(2, 0, 1, 3).reshape(h, b * t, d),
                              shared["k_sp"].transpose(1, 2).to(dtype))
    shared_scores = shared_scores.reshape(h, b, t, 2, n).transpose(0, 1)
    wk = (e @ attn.k_proj.weight.t().to(dtype)).reshape(b, -1, h, d)
    probe = torch.einsum("brhd,bthd->bhtr", wk, qh).reshape(b, h * t, -1)
    scores = torch.bmm(probe, f).reshape(b, h, t, n)
    scores += shared_scores[:, :, :, 1]
    scores.addcmul_(y.a[:, None, None, :].to(dtype), shared_scores[:, :, :, 0])
    weights = scores.softmax(-1)
    mixed = torch.bmm(weights.reshape(b, h * t, n), f.transpose(1, 2)).reshape(b, h, t, -1)
    wv = (e @ attn.v_proj.weight.t().to(dtype)).reshape(b, -1, h, d)
    out = torch.einsum("bhtr,brhd->bthd", mixed, wv)
    scaled = weights.new_empty(h, b, t, n)
    torch.mul(weights.transpose(0, 1), y.a[None, :, None, :].to(dtype), out=scaled)
    out_s = torch.bmm(scaled.reshape(h, b * t, n), shared["v_s"].to(dtype))
    out = out + out_s.reshape(h, b, t, d).permute(1, 2, 0, 3) + attn.v_proj.bias.reshape(h, d)
    return attn.out_proj(out.reshape(b, t, h * d))


def attend_lowrank_to_tokens(attn, k, v, y, shared):
    """
    Image-to-token attention (section 2) with queries from the factored image tokens (the
    shared image tokens themselves when ``y`` is None). Scores of head h against the T keys
    k_h: k_h (a S W_q,h^T + P W_q,h^T + b_q,h)^T (shared projections, once per image) plus
    (k_h W_q,h E^T) F; softmax over the T keys of each head, computed in a (B, H, T, N)
    layout. The update is returned in factored form, W V' + b_o with V' = stacked
    (v W_v,h^T + b_v,h) W_o,h^T + b_o / H (each head's weights sum to one, so b_o / H on
    every row adds b_o once).

    Args:
        k: (B, T, C) the keys' input (with positional embedding); v: (B, T, C) values' input.
        y: :class:`LowRankTokens` or None; shared: "q0" (H, N, d) the heads of
            (X + P) W_q^T + b_q (``y`` None), else "q_sp" (H, 2N, d) those of S W_q^T then
            P W_q^T + b_q.
    Returns:
        W^T (B, H T, N), the values per head v W_v,h^T + b_v,h (B, H, T, d), V' (B, H T, C).
    """
    b, t, c = k.shape
    h, d, scale = _split(attn)
    kh = attn.k_proj(k).reshape(b, t, h, d) * scale
    vh = attn.v_proj(v).reshape(b, t, h, d)
    keys = kh.permute(2, 0, 1, 3).reshape(h, b * t, d)
    if y is None:
        n = shared["q0"].shape[1]
        scores = torch.bmm(keys, shared["q0"].transpose(1, 2).to(keys.dtype))
        scores = scores.reshape(h, b, t, n).transpose(0, 1)
    else:
        n = y.a.shape[1]
        qs = torch.bmm(keys, shared["q_sp"].transpose(1, 2).to(keys.dtype))
        qs = qs.reshape(h, b, t, 2, n).transpose(0, 1)
        wq = (y.e.to(kh.dtype) @ attn.q_proj.weight.t().to(kh.dtype)).reshape(b, -1, h, d)
        probe = torch.einsum("brhd,bthd->bhtr", wq, kh).reshape(b, h * t, -1)
        scores = torch.bmm(probe, y.f.to(kh.dtype)).reshape(b, h, t, n)
        scores += qs[:, :, :, 1]
        scores.addcmul_(y.a[:, None, None, :].to(kh.dtype), qs[:, :, :, 0])
    weights = scores.softmax(2)
    vh = vh.transpose(1, 2)
    wo = attn.out_proj.weight.reshape(c, h, d)
    values = torch.einsum("bhtd,chd->bhtc", vh, wo.to(vh.dtype)) + attn.out_proj.bias / h
    return weights.reshape(b, h * t, n), vh, values.reshape(b, h * t, c)


def block_layout(feature_map, factor):
    """
    (1, C', f e, f e) -> (1, e * e, 4, [4,] C') for f = 2 or 4: pixel (f r + ..., f c + ...)
    of the stride-16 cell (r, c) at the block position of the decoder's 2 x 2 upscalings
    (see ``SharedPromptDecoder._upscale``).
    """
    _, ch, height, width = feature_map.shape
    e0, e1 = height // factor, width // factor
    if factor == 2:
        x = feature_map.reshape(ch, e0, 2, e1, 2).permute(1, 3, 2, 4, 0)
        return x.reshape(1, e0 * e1, 4, ch).contiguous()
    x = feature_map.reshape(ch, e0, 2, 2, e1, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
    return x.reshape(1, e0 * e1, 4, 4, ch).contiguous()


class SharedPromptDecoder:
    """
    Decodes prompts with a SAM 2 ``MaskDecoder`` (``decoder``), sharing the image-side work.

    ``prepare`` computes the per-image tensors once; ``decode_multimask`` (point grid: best of
    tokens 1-3, IoU filter) and ``decode_single`` (boxes: SAM 2's single-mask output with its
    dynamic multimask fallback) decode prompts in chunks of ``chunk``. With ``static_shapes``
    every chunk is padded to ``chunk`` prompts and upscaling runs in padded groups of
    ``upscale_chunk``, so that compiled stages (``compile``) see fixed shapes.
    """

    def __init__(self, decoder, chunk=32, upscale_chunk=16, static_shapes=False):
        """
        Args:
            decoder (sam2.modeling.sam.mask_decoder.MaskDecoder): with high-res features.
            chunk (int): prompts decoded together (POINTS_PER_BATCH); fewer when their
                per-prompt image tokens (N x C each) would exceed :data:`IMAGE_TOKENS_PER_CHUNK`.
            upscale_chunk (int): kept prompts upscaled at once.
            static_shapes (bool): pad to fixed shapes (for torch.compile).
        """
        if not decoder.use_high_res_features:
            raise ValueError("MODEL.REFSEG.SAM2.DECODER 'shared' needs a SAM 2 config with "
                             "use_high_res_features_in_sam: true")
        if chunk < 1 or upscale_chunk < 1:
            raise ValueError("MODEL.REFSEG.POINTS_PER_BATCH must be >= 1, got {}".format(chunk))
        self.decoder = decoder
        self.chunk = int(chunk)
        self.upscale_chunk = int(upscale_chunk)
        self.static_shapes = static_shapes
        self.transformer_stage = self._transformer
        self.upscale_stage = self._upscale

    def compile(self, **kwargs):
        """torch.compile the per-chunk transformer and upscaling stages (fixed shapes)."""
        kwargs.setdefault("dynamic", False)
        self.static_shapes = True
        self.transformer_stage = torch.compile(self._transformer, **kwargs)
        self.upscale_stage = torch.compile(self._upscale, **kwargs)

    def prepare(self, embedding, image_pe, dense, high_res):
        """
        Args:
            embedding: (1, C, e, e) image embedding; image_pe: (1, C, e, e);
            dense: (1 or B, C, e, e) dense prompt embedding (the no-mask embedding);
            high_res: [(1, C/8, 4e, 4e), (1, C/4, 2e, 2e)].
        Returns:
            dict of per-image tensors: "layers", one dict per layer (layer 0: "k0", "v0",
            "q0" (H, N, d); later layers: "k_sp", "q_sp" (H, 2N, d), "v_s" (H, N, d)) with the
            statistics of its last LayerNorm (:func:`norm_statistics`); "final" ("k_sp", "v_s")
            of the final attention; "up1"
            (N, 4 C/4) the shared tokens through the first transposed convolution; the
            high-res maps in block layout "feat_s0" (1, N, 4, 4, C/8), "feat_s1" (1, N, 4, C/4);
            "size" (e, e); "mask_size" (4e, 4e).
        """
        tr = self.decoder.transformer
        x = (embedding + dense[:1]).flatten(2).transpose(1, 2)[0]
        pe = image_pe.flatten(2).transpose(1, 2)[0].to(x.dtype)
        x_pe = x + pe

        def token_to_image(attn, tokens):
            h = attn.num_heads
            return {"k_sp": torch.cat([_heads(attn.k_proj.weight, tokens, h),
                                       _heads(attn.k_proj.weight, pe, h)], dim=1),
                    "v_s": _heads(attn.v_proj.weight, tokens, h)}

        layers, bases, shared = [], [], x
        for i, layer in enumerate(tr.layers):
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            h = t2i.num_heads
            if i == 0:
                entry = {"k0": _heads(t2i.k_proj.weight, x_pe, h, t2i.k_proj.bias),
                         "v0": _heads(t2i.v_proj.weight, x, h, t2i.v_proj.bias),
                         "q0": _heads(i2t.q_proj.weight, x_pe, h, i2t.q_proj.bias)}
            else:
                entry = token_to_image(t2i, shared)
                entry["q_sp"] = torch.cat([_heads(i2t.q_proj.weight, shared, h),
                                           _heads(i2t.q_proj.weight, pe, h, i2t.q_proj.bias)],
                                          dim=1)
            proj = i2t.out_proj
            bases.append(torch.cat([proj.weight, proj.bias[:, None]], dim=1))
            entry.update(norm_statistics(shared, bases, i2t.num_heads))
            layers.append(entry)
            bases = [basis * layer.norm4.weight[:, None] for basis in bases]
            shared = shared * layer.norm4.weight
        dc1 = self.decoder.output_upscaling[0]
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, -1)
        return {
            "layers": layers, "final": token_to_image(tr.final_attn_token_to_image, shared),
            "up1": shared @ w1.to(shared.dtype),
            "feat_s0": block_layout(high_res[0], 4), "feat_s1": block_layout(high_res[1], 2),
            "size": tuple(embedding.shape[-2:]), "mask_size": tuple(high_res[0].shape[-2:]),
        }

    def _tokens(self, sparse):
        dec = self.decoder
        parts = [dec.iou_token.weight, dec.mask_tokens.weight]
        if dec.pred_obj_scores:
            parts.insert(0, dec.obj_score_token.weight)
        out = torch.cat(parts).unsqueeze(0).expand(sparse.shape[0], -1, -1)
        return torch.cat([out, sparse.to(out.dtype)], dim=1)

    def _transformer(self, tokens, layers, final):
        """
        tokens (B, T, C) -> final tokens (B, T, C) and the final image tokens as factors
        (a (B, N), F (B, r, N), E (B, r, C), see :class:`LowRankTokens`).
        """
        tr = self.decoder.transformer
        queries, image = tokens, None
        heads = tr.layers[0].cross_attn_image_to_token.num_heads
        total_rank = len(tr.layers) * (heads * tokens.shape[1] + 2)
        for layer, shared in zip(tr.layers, layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            q = queries + tokens
            if image is None:
                out = attend_shared_image(layer.cross_attn_token_to_image, q, shared["k0"],
                                          shared["v0"])
            else:
                out = attend_tokens_to_lowrank(layer.cross_attn_token_to_image, q, image, shared)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            update = attend_lowrank_to_tokens(layer.cross_attn_image_to_token, queries + tokens,
                                              queries, image, shared)
            image = norm_lowrank(layer.norm4, add_update(image, *update, total_rank), shared)
        out = attend_tokens_to_lowrank(tr.final_attn_token_to_image, queries + tokens, image, final)
        return tr.norm_final_attn(queries + out), (image.a, image.f, image.e)

    def _upscale(self, keys, hyper, up1, feat_s0, feat_s1, e):
        """
        SAM 2's upscaling ``act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)`` and the
        hypernetwork product, computed token-major (section 6): a 2 x 2 stride-2 transposed
        convolution is a linear map of each input pixel to its 2 x 2 output block, so the first
        one applied to the factored tokens is diag(a) (S W_1) + F^T (E W_1), S W_1 once per image;
        LayerNorm2d becomes a LayerNorm over the last dimension. Pixel
        (4r + 2i + i', 4c + 2j + j') is element (r c, i j, i' j').

        Args:
            keys: factors (a (K, N), F (K, r, N), E (K, r, C)) of the final image tokens;
            hyper (K, M, C/8) hypernetwork outputs of M tokens; up1 (N, 4 C/4) S W_1;
            feat_s0 (1, N, 4, 4, C/8), feat_s1 (1, N, 4, C/4) from :func:`block_layout`;
            e: (e, e) the embedding grid.
        Returns:
            (K, M, 4e, 4e) mask logits.
        """
        dc1, ln1, act1, dc2, act2 = self.decoder.output_upscaling
        a, f, factors = keys
        k, _, n = f.shape
        c1, c0 = dc1.out_channels, dc2.out_channels
        dtype = f.dtype
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1).to(dtype)
        low = factors.to(dtype) @ w1
        shift1 = (feat_s1 + dc1.bias).reshape(n, 4 * c1).to(dtype)
        w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c0).to(dtype)
        shift0 = (feat_s0 + dc2.bias).reshape(n, 4, 4 * c0).to(dtype)
        hyper_t = hyper.transpose(1, 2).to(dtype)
        m = hyper.shape[1]
        tile = max(1, UPSCALE_TOKENS_PER_TILE // k)
        masks = []
        for start in range(0, n, tile):
            part = slice(start, start + tile)
            up = torch.addcmul(shift1[part], a[:, part, None].to(dtype), up1[part].to(dtype))
            up = torch.baddbmm(up, f[:, :, part].transpose(1, 2), low)
            t = up.shape[1]
            up = act1(F.layer_norm(up.reshape(k, t, 4, c1), (c1,), ln1.weight, ln1.bias, ln1.eps))
            up = (up.reshape(k * t * 4, c1) @ w2).reshape(k, t * 4, 4 * c0)
            up = act2(up.add_(shift0[part].reshape(t * 4, 4 * c0)))
            masks.append(torch.bmm(up.reshape(k, t * 16, c0), hyper_t))
        masks = torch.cat(masks, dim=1)
        masks = masks.reshape(k, e[0], e[1], 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(k, m, 4 * e[0], 4 * e[1])

    def _iou(self, iou_token):
        """IoU head in fp32 (it ranks and thresholds): (B, C) -> (B, 4)."""
        with torch.autocast(iou_token.device.type, enabled=False):
            return self.decoder.iou_prediction_head(iou_token.float())

    def _hyper(self, mask_tokens, which=None):
        """
        mask_tokens (K, 4, C) -> hypernetwork outputs (K, 1, C/8) of the token ``which`` (K,)
        of each prompt, or (K, 4, C/8) of every token when ``which`` is None.
        """
        mlps = self.decoder.output_hypernetworks_mlps
        if which is None:
            return torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(mlps)], dim=1)
        out = torch.zeros(mask_tokens.shape[0], 1, mlps[0].layers[-1].out_features,
                          dtype=mask_tokens.dtype, device=mask_tokens.device)
        for i, mlp in enumerate(mlps):
            rows = torch.nonzero(which == i)[:, 0]
            if rows.numel():
                out[rows, 0] = mlp(mask_tokens[rows, i]).to(out.dtype)
        return out

    def _run_chunks(self, ctx, sparse, pick):
        """Shared loop: ``pick(hs, keys, ious)`` -> (logits, ious, index) per chunk."""
        outs = []
        n = ctx["up1"].shape[0]
        budget = IMAGE_TOKENS_PER_CHUNK
        if ctx["up1"].device.type == "cpu":
            budget = min(budget, CPU_IMAGE_TOKENS_PER_CHUNK)
        chunk = max(1, min(self.chunk, budget // n))
        for start in range(0, sparse.shape[0], chunk):
            tokens = self._tokens(sparse[start : start + chunk])
            b = tokens.shape[0]
            if self.static_shapes and b < chunk:
                tokens = torch.cat([tokens, tokens[-1:].expand(chunk - b, -1, -1)])
            hs, keys = run_sensitive(self.transformer_stage, tokens, ctx["layers"], ctx["final"])
            hs, keys = hs[:b], tuple(part[:b] for part in keys)
            s = 1 if self.decoder.pred_obj_scores else 0
            logits, ious, index = pick(ctx, hs[:, s + 1 : s + 1 + self.decoder.num_mask_tokens],
                                       keys, self._iou(hs[:, s]))
            outs.append((logits, ious, index + start))
        return [torch.cat(parts) for parts in zip(*outs)]

    def _upscale_kept(self, ctx, keys, hyper):
        k = hyper.shape[0]
        if k == 0:
            return hyper.new_zeros((0, hyper.shape[1]) + ctx["mask_size"])
        outs = []
        step = self.upscale_chunk
        for start in range(0, k, step):
            parts = [part[start : start + step] for part in keys + (hyper,)]
            n = parts[0].shape[0]
            if self.static_shapes and n < step:
                parts = [torch.cat([p, p[-1:].expand((step - n,) + p.shape[1:])]) for p in parts]
            logits = self.upscale_stage(tuple(parts[:3]), parts[3], ctx["up1"], ctx["feat_s0"],
                                        ctx["feat_s1"], ctx["size"])
            outs.append(logits[:n])
        return torch.cat(outs)

    def decode_multimask(self, ctx, sparse, iou_thresh):
        """
        Best of the multimask tokens 1-3 by predicted IoU, kept if that IoU > ``iou_thresh``.

        Args:
            ctx: from :meth:`prepare`; sparse: (P, 2, C) sparse prompt embeddings.
        Returns:
            logits (K, h, w), predicted IoUs (K,) fp32, prompt indices (K,) and chosen output
            token (K,) in 0..2 (multimask output order), K <= P, in prompt order.
        """
        def pick(ctx, mask_tokens, keys, ious):
            best = ious[:, 1:].argmax(dim=1)
            best_iou = ious[:, 1:].gather(1, best[:, None])[:, 0]
            keep = torch.nonzero(best_iou > iou_thresh)[:, 0]
            hyper = self._hyper(mask_tokens[keep], best[keep] + 1)
            kept = keys if len(keep) == len(best) else tuple(part[keep] for part in keys)
            logits = self._upscale_kept(ctx, kept, hyper)[:, 0]
            return logits, torch.stack([best_iou[keep], best[keep].to(best_iou.dtype)], 1), keep

        logits, iou_choice, index = self._run_chunks(ctx, sparse, pick)
        return logits, iou_choice[:, 0], index, iou_choice[:, 1].long()

    def decode_single(self, ctx, sparse):
        """
        SAM 2's single-mask output (``multimask_output=False``), with the decoder's dynamic
        fallback to the best multimask output when it is configured.

        Returns:
            logits (P, h, w) and predicted IoUs (P,).
        """
        dec = self.decoder

        def pick(ctx, mask_tokens, keys, ious):
            b = mask_tokens.shape[0]
            logits = self._upscale_kept(ctx, keys, self._hyper(mask_tokens))
            if dec.dynamic_multimask_via_stability and not dec.training:
                logits, ious = dec._dynamic_multimask_via_stability(logits, ious.to(logits.dtype))
            else:
                logits, ious = logits[:, 0:1], ious[:, 0:1]
            return logits[:, 0], ious[:, 0], torch.arange(b, device=mask_tokens.device)

        logits, ious, _ = self._run_chunks(ctx, sparse, pick)
        return logits, ious
