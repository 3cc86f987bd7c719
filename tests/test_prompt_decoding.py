"""
The shared prompt decoder against SAM 2's own MaskDecoder.forward (random Hiera-T weights made
prompt-sensitive, random image features): same kept prompts, same multimask choices, logits and
predicted IoUs within 1e-4, at several grids and chunk sizes (POINTS_PER_BATCH, capped by the
decoder's token budget), padded (compile) shapes included.
"""
import pytest
import torch

from refseg_d2.modeling.proposals.sam2_prompter import SAM2Prompter, build_sam2_model
from refseg_d2.testing.random_weights import make_sam2_prompt_sensitive

TOL = 1e-4


@pytest.fixture(scope="module")
def sam_and_features():
    sam = build_sam2_model("configs/sam2/sam2_hiera_t.yaml", "", 256, random_init=True, seed=3)
    make_sam2_prompt_sensitive(sam)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        prompter = SAM2Prompter(sam, 2, 4, 0.0)
        embedding, high_res = prompter.encode_image(torch.rand(1, 3, 256, 256, generator=gen))
    return sam, embedding, high_res


def _official_grid(sam, embedding, high_res, side):
    """All prompts of a side x side grid through MaskDecoder.forward: logits (P, 3, h, w), IoUs (P, 3)."""
    prompter = SAM2Prompter(sam, side, side * side, 0.0, "official")
    coords = prompter.grid[:, None, :]
    labels = torch.ones(coords.shape[:2], dtype=torch.int32)
    return prompter._decode(embedding, high_res, points=(coords, labels))


@pytest.mark.parametrize("side,chunk,static", [(3, 1, False), (5, 4, False), (8, 64, False),
                                               (5, 7, True)])
def test_shared_decoder_matches_the_official_decoder(sam_and_features, side, chunk, static):
    sam, embedding, high_res = sam_and_features
    with torch.no_grad():
        logits, ious = _official_grid(sam, embedding, high_res, side)
        best_iou, best = ious.max(dim=1)
        ranked = best_iou.sort().values
        mid = len(ranked) // 2
        assert ranked[mid] - ranked[mid - 1] > 2 * TOL  # no prompt at the threshold's edge
        thresh = float(ranked[mid - 1] + ranked[mid]) / 2  # about half of the prompts pass
        want = torch.nonzero(best_iou > thresh)[:, 0]
        assert 0 < len(want) < side * side
        prompter = SAM2Prompter(sam, side, chunk, thresh, "shared")
        prompter.shared.static_shapes = static
        prompter.shared.upscale_chunk = 3
        points = prompter.grid[:, None, :]
        sparse, _ = sam.sam_prompt_encoder(
            points=(points, torch.ones(points.shape[:2], dtype=torch.int32)), boxes=None, masks=None)
        ctx = prompter._shared_context(embedding, high_res)
        got_logits, got_ious, index, choice = prompter.shared.decode_multimask(ctx, sparse, thresh)
    assert torch.equal(index, want)
    assert torch.equal(choice, best[want])
    assert (got_ious - best_iou[want]).abs().max() <= TOL
    assert (got_logits - logits[want, best[want]]).abs().max() <= TOL


def test_point_grid_and_box_prompting_agree_between_decoders(sam_and_features):
    sam, embedding, high_res = sam_and_features
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [50.0, 40.0, 220.0, 250.0], [0, 0, 255, 255]])
    out = {}
    with torch.no_grad():
        for name in ("official", "shared"):
            prompter = SAM2Prompter(sam, 6, 5, 0.5, name)
            out[name] = prompter.decode_point_grid(embedding, high_res) + (
                prompter.decode_boxes(embedding, high_res, boxes),)
    (lo, io, bo), (ls, is_, bs) = out["official"], out["shared"]
    assert 0 < lo.shape[0] < 36 and lo.shape == ls.shape
    assert (lo - ls).abs().max() <= TOL and (io - is_).abs().max() <= TOL
    assert bo.shape == (3, 64, 64) and (bo - bs).abs().max() <= TOL


def test_iou_head_runs_in_fp32_under_autocast(sam_and_features):
    sam, embedding, high_res = sam_and_features
    prompter = SAM2Prompter(sam, 3, 9, 0.0, "official", amp_dtype=torch.bfloat16)
    with torch.no_grad(), prompter.autocast():
        _, ious = _official_grid(sam, embedding, high_res, 3)
        hs = torch.randn(2, 256)
        head = sam.sam_mask_decoder.iou_prediction_head(hs)
    assert ious.dtype == torch.float32 and head.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(head, sam.sam_mask_decoder.iou_prediction_head(hs), atol=1e-6)


@pytest.mark.parametrize("decoder", ["official", "shared"])
def test_mixed_precision_decides_the_proposals_in_fp32(sam_and_features, decoder):
    """ACCEL.AMP (prompter.autocast()): the predicted IoUs, hence the kept prompts and the best-of-3
    choices, are the fp32 ones; only the mask upscaling runs in bf16. A plain bf16 autocast
    (MEMORY.SAM2_AMP, FSOD-VFM's reference masks) moves the IoUs."""
    sam, embedding, high_res = sam_and_features
    with torch.no_grad():
        want_logits, want_ious = SAM2Prompter(sam, 6, 12, 0.3, decoder).decode_point_grid(
            embedding, high_res)
        prompter = SAM2Prompter(sam, 6, 12, 0.3, decoder, amp_dtype=torch.bfloat16)
        with prompter.autocast():
            logits, ious = prompter.decode_point_grid(embedding, high_res)
        with prompter.autocast(torch.bfloat16):
            _, plain_ious = prompter.decode_point_grid(embedding, high_res)
    assert 0 < len(want_ious) < 36 and ious.shape == want_ious.shape
    assert (ious - want_ious).abs().max() <= TOL
    assert logits.dtype == torch.bfloat16
    assert 0 < (logits.float() - want_logits).abs().max() < 0.1
    assert ((logits > 0) == (want_logits > 0)).float().mean() > 0.99
    assert plain_ious.shape != want_ious.shape or (plain_ious - want_ious).abs().max() > 10 * TOL


def test_unknown_decoder_is_refused_naming_the_key(sam_and_features):
    with pytest.raises(ValueError, match="MODEL.REFSEG.SAM2.DECODER"):
        SAM2Prompter(sam_and_features[0], 2, 4, 0.0, "fast")


def test_shared_decoder_holds_at_most_its_token_budget_of_prompts(sam_and_features, monkeypatch):
    from refseg_d2.modeling.proposals import prompt_decoding

    sam, embedding, high_res = sam_and_features
    with torch.no_grad():
        prompter = SAM2Prompter(sam, 4, 16, 0.0, "shared")
        whole = prompter.decode_point_grid(embedding, high_res)
        sizes = []
        stage = prompter.shared.transformer_stage
        prompter.shared.transformer_stage = lambda tokens, *a: (sizes.append(len(tokens)),
                                                                 stage(tokens, *a))[1]
        monkeypatch.setattr(prompt_decoding, "IMAGE_TOKENS_PER_CHUNK", 5 * embedding[0, 0].numel())
        capped = prompter.decode_point_grid(embedding, high_res)
    assert sizes == [5, 5, 5, 1]
    assert all((a - b).abs().max() <= TOL for a, b in zip(whole, capped))


def test_layer_norm_of_low_rank_tokens_equals_the_direct_layer_norm():
    """Two image-to-token updates, each followed by a LayerNorm, in factored form and directly."""
    from refseg_d2.modeling.proposals.prompt_decoding import (
        add_update, norm_lowrank, norm_statistics)

    gen = torch.Generator().manual_seed(1)
    b, n, c, h, t, d = 3, 50, 16, 2, 3, 4

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).float() * scale

    # shared tokens far from zero mean, so that centring matters
    shared = rand(n, c) + 6.0
    norms = [torch.nn.LayerNorm(c) for _ in range(2)]
    with torch.no_grad():
        for ln in norms:
            ln.weight.copy_(1 + rand(c, scale=0.3))
            ln.bias.copy_(rand(c))
    y, direct, bases, stages = None, shared.expand(b, n, c), [], shared
    for ln in norms:
        weights = rand(b, h, t, n).softmax(2)
        values = rand(b, h, t, d)
        w_o, b_o = rand(c, h * d), rand(c)
        out = torch.einsum("bhtn,bhtd->bhnd", weights, values)
        rows = torch.einsum("bhtd,chd->bhtc", values, w_o.reshape(c, h, d)) + b_o / h
        bases.append(torch.cat([w_o, b_o[:, None]], dim=1))
        direct = ln(direct + out.transpose(1, 2).reshape(b, n, h * d) @ w_o.t() + b_o)
        update = add_update(y, weights.reshape(b, h * t, n), values, rows.reshape(b, h * t, c),
                            2 * (h * t + 2))
        y = norm_lowrank(ln, update, norm_statistics(stages, bases, h))
        bases = [basis * ln.weight[:, None] for basis in bases]
        stages = stages * ln.weight
        factored = y.a[..., None] * stages + torch.bmm(y.f.transpose(1, 2), y.e)
        assert (factored - direct).abs().max() <= 1e-5


@pytest.mark.parametrize("rank", [1, 2, 5, 130])
def test_quadratic_form_from_the_upper_block_triangle_equals_f_g_f(rank):
    from refseg_d2.modeling.proposals.prompt_decoding import quadratic_form

    g = torch.Generator().manual_seed(rank)
    e = torch.randn(3, rank, 7, generator=g, dtype=torch.float64)
    f = torch.randn(3, rank, 11, generator=g, dtype=torch.float64)
    gram = e @ e.transpose(1, 2)
    want = torch.einsum("brn,brs,bsn->bn", f, gram, f)
    torch.testing.assert_close(quadratic_form(gram, f), want, rtol=1e-12, atol=1e-10)
    # hand-computed: G = [[2, 1], [1, 3]], f = (1, 2): 2 + 2 * 1 * 2 + 3 * 4 = 18
    two = torch.tensor([[[2.0, 1.0], [1.0, 3.0]]], dtype=torch.float64)
    assert quadratic_form(two, torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)).item() == 18.0


@pytest.mark.parametrize("interface", ["direct", "image_predictor"])
def test_image_encoding_skips_the_necks_position_encodings_and_keeps_the_features(
        sam_and_features, interface):
    sam = sam_and_features[0]
    neck = sam.image_encoder.neck
    real = neck.position_encoding
    calls = []
    hook = real.register_forward_hook(lambda *args: calls.append(1))
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    prompter = SAM2Prompter(sam, 2, 4, 0.0, interface=interface)
    with torch.no_grad():
        embedding, high_res = prompter.encode_image(image)
        assert calls == [] and neck.position_encoding is real
        # SAM 2's own route: every level with its position encoding, flattened and reshaped
        _, feats, _, sizes = sam._prepare_backbone_features(
            sam.forward_image((image - prompter.pixel_mean) / prompter.pixel_std))
    hook.remove()
    assert len(calls) == 4                                        # one per pyramid level
    if interface == "image_predictor":
        feats[-1] = feats[-1] + sam.no_mem_embed
    want = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats, sizes)]
    assert torch.equal(embedding, want[-1]) and embedding.shape == (1, 256, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(high_res, want[:-1]))
    assert [tuple(m.shape) for m in high_res] == [(1, 32, 64, 64), (1, 64, 32, 32)]
