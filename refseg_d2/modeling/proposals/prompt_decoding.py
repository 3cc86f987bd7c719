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
   i.e. the (H T x N) weights multiply Y itself and only H T rows get projected.
4. What cannot be shared: after layer 0 the image tokens are LayerNorm(X + out_0), a
   different (N, C) tensor per prompt, and likewise after layer 1; they are materialised for
   a chunk of prompts at a time (``chunk``), never for all prompts.
5. The predicted IoUs depend only on the tokens, so they are computed first (IoU head in fp32
   even under autocast); mask upscaling (the two transposed convolutions with the
   high-resolution features) and the hypernetwork product then run only for prompts that
   pass the filter, and only for their chosen output token.

Per prompt this is ~0.47 GMAC in the transformer (the official decoder: ~1.3 GMAC) plus
~0.4 GMAC of upscaling for kept prompts only. Rounding differs from the official decoder
(sums in another order); ties in predicted IoU are broken as ``argmax`` does (first max).

Shapes: B prompts of a chunk, T tokens, N = e * e image tokens, C channels, h x w = 4e x 4e
mask grid; K kept prompts.
"""
import torch
import torch.nn.functional as F

# Per-prompt image tokens held at once (bounds memory: 2^17 tokens x 256 channels x 4 bytes =
# 128 MiB per tensor in fp32, e.g. 32 prompts at SAM 2's 64 x 64 embedding of a 1024 input).
IMAGE_TOKENS_PER_CHUNK = 1 << 17


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


def attend_tokens_to_image(attn, q, image, image_pe_sum):
    """
    Token-to-image attention against per-prompt image tokens, projections folded (section 3).

    Args:
        q: (B, T, C) token queries (with their positional embedding).
        image: (B, N, C) the image tokens Y (the values' input).
        image_pe_sum: (B, N, C) Y + P (the keys' input).
    Returns:
        (B, T, C).
    """
    b, t, c = q.shape
    h, d, scale = _split(attn)
    qh = attn.q_proj(q).reshape(b, t, h, d)
    wk = attn.k_proj.weight.reshape(h, d, c)
    qk = torch.einsum("bthd,hdc->bhtc", qh, wk.to(qh.dtype)).reshape(b, h * t, c) * scale
    weights = torch.bmm(qk, image_pe_sum.transpose(1, 2).to(qk.dtype)).softmax(-1)
    z = torch.bmm(weights.to(image.dtype), image).reshape(b, h, t, c)
    wv = attn.v_proj.weight.reshape(h, d, c)
    v = torch.einsum("bhtc,hdc->bthd", z, wv.to(z.dtype)) + attn.v_proj.bias.reshape(h, d)
    return attn.out_proj(v.reshape(b, t, h * d))


def attend_image_to_tokens(attn, k, v, residual, image_pe_sum=None, shared_queries=None):
    """
    Image-to-token attention plus its residual, the output projection folded into the token
    values (section 2). The softmax runs over the T keys of each head in a (B, H, T, N)
    layout; since each head's weights sum to one, b_o / H added to every folded value row
    adds b_o once, and the residual is accumulated by the same product.

    Args:
        k: (B, T, C) token keys' input (with positional embedding); v: (B, T, C) values' input.
        residual: (B or 1, N, C) the image tokens before the update.
        image_pe_sum: (B, N, C) per-prompt image tokens + P (layer >= 1), or
        shared_queries: (H, N, d) the image queries projected once per image (layer 0).
    Returns:
        (B, N, C) residual + attention output.
    """
    b, t, c = k.shape
    h, d, scale = _split(attn)
    kh = attn.k_proj(k).reshape(b, t, h, d)
    vh = attn.v_proj(v).reshape(b, t, h, d)
    wo = attn.out_proj.weight.reshape(c, h, d)
    v_out = torch.einsum("bthd,chd->bhtc", vh, wo.to(vh.dtype)) + attn.out_proj.bias / h
    v_out = v_out.reshape(b, h * t, c)
    if shared_queries is not None:
        n = shared_queries.shape[1]
        keys_t = kh.permute(2, 0, 1, 3).reshape(h, b * t, d).to(shared_queries.dtype)
        scores = torch.bmm(keys_t, shared_queries.transpose(1, 2)) * scale
        scores = scores.reshape(h, b, t, n).transpose(0, 1)
    else:
        n = image_pe_sum.shape[1]
        wq = attn.q_proj.weight.reshape(h, d, c)
        kq = torch.einsum("bthd,hdc->bhtc", kh, wq.to(kh.dtype)).reshape(b, h * t, c) * scale
        bias = torch.einsum("bthd,hd->bht", kh, attn.q_proj.bias.reshape(h, d).to(kh.dtype)) * scale
        scores = torch.baddbmm(bias.reshape(b, h * t, 1), kq, image_pe_sum.transpose(1, 2).to(kq.dtype))
        scores = scores.reshape(b, h, t, n)
    weights = scores.softmax(2).reshape(b, h * t, n).transpose(1, 2)
    return torch.baddbmm(residual.to(v_out.dtype), weights.to(v_out.dtype), v_out)


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
            dict of per-image tensors: "x", "pe" (1, N, C); "k0", "v0", "q0" (H, N, d); the
            high-res maps in block layout "feat_s0" (1, N, 4, 4, C/8), "feat_s1"
            (1, N, 4, C/4); "size" (e, e); "mask_size" (4e, 4e).
        """
        layer0 = self.decoder.transformer.layers[0]
        x = (embedding + dense[:1]).flatten(2).transpose(1, 2)
        pe = image_pe.flatten(2).transpose(1, 2).to(x.dtype)
        x_pe = x + pe
        t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token

        def heads(attn, proj, inputs):
            h, d, _ = _split(attn)
            return proj(inputs)[0].reshape(-1, h, d).transpose(0, 1).contiguous()

        return {
            "x": x, "pe": pe,
            "k0": heads(t2i, t2i.k_proj, x_pe), "v0": heads(t2i, t2i.v_proj, x),
            "q0": heads(i2t, i2t.q_proj, x_pe),
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

    def _transformer(self, tokens, x, pe, k0, v0, q0):
        """tokens (B, T, C) -> final tokens (B, T, C) and image tokens (B, N, C)."""
        tr = self.decoder.transformer
        queries, keys = tokens, x
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            q = queries + tokens
            if i == 0:
                out = attend_shared_image(layer.cross_attn_token_to_image, q, k0, v0)
            else:
                keys_pe = keys + pe
                out = attend_tokens_to_image(layer.cross_attn_token_to_image, q, keys, keys_pe)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + tokens
            if i == 0:
                keys = attend_image_to_tokens(layer.cross_attn_image_to_token, q, queries, keys,
                                              shared_queries=q0)
            else:
                keys = attend_image_to_tokens(layer.cross_attn_image_to_token, q, queries, keys,
                                              image_pe_sum=keys_pe)
            keys = layer.norm4(keys)
        out = attend_tokens_to_image(tr.final_attn_token_to_image, queries + tokens, keys, keys + pe)
        return tr.norm_final_attn(queries + out), keys

    def _upscale(self, keys, hyper, feat_s0, feat_s1, e):
        """
        SAM 2's upscaling ``act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)`` and the
        hypernetwork product, computed token-major: a 2 x 2 stride-2 transposed convolution is
        a linear map of each input pixel to its 2 x 2 output block, so it runs as one matmul on
        the (K, N, C) tokens (no transpose to an image) and LayerNorm2d becomes a LayerNorm over
        the last dimension. Pixel (4r + 2i + i', 4c + 2j + j') is element (r c, i j, i' j').

        Args:
            keys (K, N, C); hyper (K, M, C/8) hypernetwork outputs of M tokens;
            feat_s0 (1, N, 4, 4, C/8), feat_s1 (1, N, 4, C/4) from :func:`block_layout`;
            e: (e, e) the embedding grid.
        Returns:
            (K, M, 4e, 4e) mask logits.
        """
        dc1, ln1, act1, dc2, act2 = self.decoder.output_upscaling
        k, n, c = keys.shape
        c1, c0 = dc1.out_channels, dc2.out_channels
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1).to(keys.dtype)
        shift1 = (feat_s1 + dc1.bias).reshape(1, n, 4 * c1).to(keys.dtype)
        up = torch.baddbmm(shift1, keys, w1.expand(k, c, 4 * c1)).reshape(k, n, 4, c1)
        up = act1(F.layer_norm(up, (c1,), ln1.weight, ln1.bias, ln1.eps))
        w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c0).to(up.dtype)
        shift0 = (feat_s0 + dc2.bias).reshape(1, n * 4, 4 * c0).to(up.dtype)
        up = torch.baddbmm(shift0, up.reshape(k, n * 4, c1), w2.expand(k, c1, 4 * c0))
        up = act2(up)
        m = hyper.shape[1]
        masks = torch.bmm(up.reshape(k, n * 16, c0), hyper.transpose(1, 2).to(up.dtype))
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
        chunk = max(1, min(self.chunk, IMAGE_TOKENS_PER_CHUNK // ctx["x"].shape[1]))
        for start in range(0, sparse.shape[0], chunk):
            tokens = self._tokens(sparse[start : start + chunk])
            b = tokens.shape[0]
            if self.static_shapes and b < chunk:
                tokens = torch.cat([tokens, tokens[-1:].expand(chunk - b, -1, -1)])
            hs, keys = self.transformer_stage(tokens, ctx["x"], ctx["pe"], ctx["k0"], ctx["v0"], ctx["q0"])
            hs, keys = hs[:b], keys[:b]
            s = 1 if self.decoder.pred_obj_scores else 0
            logits, ious, index = pick(ctx, hs[:, s + 1 : s + 1 + self.decoder.num_mask_tokens],
                                       keys, self._iou(hs[:, s]))
            outs.append((logits, ious, index + start))
        return [torch.cat(parts) for parts in zip(*outs)]

    def _upscale_kept(self, ctx, keys, hyper):
        k = keys.shape[0]
        if k == 0:
            return keys.new_zeros((0, hyper.shape[1]) + ctx["mask_size"])
        outs = []
        step = self.upscale_chunk
        for start in range(0, k, step):
            kk, hh = keys[start : start + step], hyper[start : start + step]
            n = kk.shape[0]
            if self.static_shapes and n < step:
                kk = torch.cat([kk, kk[-1:].expand(step - n, -1, -1)])
                hh = torch.cat([hh, hh[-1:].expand(step - n, -1, -1)])
            outs.append(self.upscale_stage(kk, hh, ctx["feat_s0"], ctx["feat_s1"], ctx["size"])[:n])
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
            logits = self._upscale_kept(ctx, keys[keep], hyper)[:, 0]
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
            b = keys.shape[0]
            logits = self._upscale_kept(ctx, keys, self._hyper(mask_tokens))
            if dec.dynamic_multimask_via_stability and not dec.training:
                logits, ious = dec._dynamic_multimask_via_stability(logits, ious.to(logits.dtype))
            else:
                logits, ious = logits[:, 0:1], ious[:, 0:1]
            return logits[:, 0], ious[:, 0], torch.arange(b, device=keys.device)

        logits, ious, _ = self._run_chunks(ctx, sparse, pick)
        return logits, ious
