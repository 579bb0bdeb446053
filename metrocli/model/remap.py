"""Official Metric3D checkpoint keys -> metrocli module names: one pure function and a regex table.

Modules never know about checkpoint formats; this is the only place that does (timm's checkpoint_filter_fn
style). Rules are applied in order; the first matching pattern rewrites the key (``re.sub`` semantics,
anchored with ``^``). A rule whose replacement is ``None`` drops the key.
"""

from __future__ import annotations

import re

from metrocli.model.presets import Family

# --- ViT (Metric3D v2) rules: owned by the v2 model code ----------------------------------------------------
# Official ``DensePredModel`` keys (``depth_model.encoder.*`` DINOv2, ``depth_model.decoder.*``
# RAFTDepthNormalDPT5) -> :class:`metrocli.model.metric3d.ViTDepthNormalNet` names (``encoder.*`` timm
# VisionTransformer names, ``decoder.*`` :mod:`metrocli.model.dpt_gru` names).
_V_ENC = r"^(?:module\.)?depth_model\.encoder\."
_V_DEC = r"^(?:module\.)?depth_model\.decoder\."
_V_FUSE = {"3": "fuse_14", "2": "fuse_7", "1": "fuse_4"}
_V_FUSE_PART = {"way_trunk": "trunk", "way_branch": "skip", "out_conv": "project"}
_V_CONTEXT_LEVEL = {"04": "0", "08": "1", "16": "2"}
_V_CONTEXT_BRANCH = {"0": "hidden", "1": "context"}
_V_GRU = {"08": "gru_4", "16": "gru_7", "32": "gru_14"}
_V_DELTA = {"conv1d": "depth1", "conv2d": "depth2", "conv1n": "normal1", "conv2n": "normal2"}

VIT_RULES: list[tuple[str, str | None]] = [
    # encoder (DINOv2 with registers; one block chunk "blocks.0.<i>")
    (_V_ENC + r"register_tokens$", "encoder.reg_token"),
    (_V_ENC + r"blocks\.0\.(\d+)\.mlp\.w12\.", r"encoder.blocks.\1.mlp.fc1."),  # giant2 SwiGLU
    (_V_ENC + r"blocks\.0\.(\d+)\.mlp\.w3\.", r"encoder.blocks.\1.mlp.fc2."),
    (_V_ENC + r"blocks\.0\.(\d+)\.", r"encoder.blocks.\1."),
    (_V_ENC, "encoder."),
    # reassembly of tokens into feature maps
    (_V_DEC + r"token2feature\.read_(\d)\.readoper\.project_patch\.", r"decoder.reassemble.\1.patch_proj."),
    (_V_DEC + r"token2feature\.read_(\d)\.readoper\.project_learn\.", r"decoder.reassemble.\1.prefix_proj."),
    (_V_DEC + r"token2feature\.read_(\d)\.sample\.(?:0\.)?", r"decoder.reassemble.\1.resample."),
    # DPT fusion
    *[
        (_V_DEC + rf"decoder_mono\.upconv_{i}\.{part}\.", f"decoder.{fuse}.{ours}.")
        for i, fuse in _V_FUSE.items()
        for part, ours in _V_FUSE_PART.items()
    ],
    # initial depth (bins) and normal heads
    (_V_DEC + r"depth_regressor\.0\.", "decoder.depth_head.conv1."),
    (_V_DEC + r"depth_regressor\.2\.", "decoder.depth_head.conv2."),
    *[(_V_DEC + rf"normal_predictor\.{2 * i}\.", f"decoder.normal_head.conv{i + 1}.") for i in range(4)],
    # context encoder: the shortcut LayerNorm is registered twice (norm3 and downsample.1); the module loads
    # downsample.1 last, so that copy is the one in effect
    *[
        rule
        for level, lv in _V_CONTEXT_LEVEL.items()
        for branch, br in _V_CONTEXT_BRANCH.items()
        for rule in (
            (_V_DEC + rf"context_feature_encoder\.outputs{level}\.{branch}\.0\.norm3\.", None),
            (
                _V_DEC + rf"context_feature_encoder\.outputs{level}\.{branch}\.0\.downsample\.0\.",
                f"decoder.context.{lv}.{br}.res.shortcut.",
            ),
            (
                _V_DEC + rf"context_feature_encoder\.outputs{level}\.{branch}\.0\.downsample\.1\.",
                f"decoder.context.{lv}.{br}.res.shortcut_norm.",
            ),
            (
                _V_DEC + rf"context_feature_encoder\.outputs{level}\.{branch}\.0\.",
                f"decoder.context.{lv}.{br}.res.",
            ),
            (
                _V_DEC + rf"context_feature_encoder\.outputs{level}\.{branch}\.1\.",
                f"decoder.context.{lv}.{br}.conv.",
            ),
        )
    ],
    (_V_DEC + r"context_zqr_convs\.(\d)\.", r"decoder.gates.\1."),
    # ConvGRU update block
    *[(_V_DEC + rf"update_block\.gru{k}\.", f"decoder.update.{v}.") for k, v in _V_GRU.items()],
    *[
        (_V_DEC + rf"update_block\.flow_head\.{k}\.", f"decoder.update.delta_head.{v}.")
        for k, v in _V_DELTA.items()
    ],
    (_V_DEC + r"update_block\.mask\.0\.", "decoder.update.upmask.conv1."),
    (_V_DEC + r"update_block\.mask\.2\.", "decoder.update.upmask.conv2."),
]

# --- ConvNeXt + hourglass (Metric3D v1) rules: owned by the v1 model code ----------------------------------
# Keys are rewritten relative to ``metrocli.model.convnext_hourglass.ConvNeXtHourglass`` itself
# (``encoder.*``, ``decoder.*``). Nothing is dropped: every key of the official v1 checkpoints (BatchNorm
# ``num_batches_tracked`` included) has a home, so loading stays ``strict=True``.
CONVNEXT_RULES: list[tuple[str, str | None]] = [
    # ConvNeXt: downsample_layers[0] is the stem, downsample_layers[i>0] open stage i;
    # stages[i][j] are the blocks of stage i.
    (r"^depth_model\.encoder\.downsample_layers\.0\.0\.", "encoder.stem.conv."),
    (r"^depth_model\.encoder\.downsample_layers\.0\.1\.", "encoder.stem.norm."),
    (r"^depth_model\.encoder\.downsample_layers\.([1-3])\.0\.", r"encoder.stages.\1.downsample.norm."),
    (r"^depth_model\.encoder\.downsample_layers\.([1-3])\.1\.", r"encoder.stages.\1.downsample.conv."),
    (r"^depth_model\.encoder\.stages\.(\d)\.(\d+)\.gamma$", r"encoder.stages.\1.blocks.\2.layer_scale"),
    (r"^depth_model\.encoder\.stages\.(\d)\.(\d+)\.dwconv\.", r"encoder.stages.\1.blocks.\2.conv_dw."),
    (r"^depth_model\.encoder\.stages\.(\d)\.(\d+)\.norm\.", r"encoder.stages.\1.blocks.\2.norm."),
    (r"^depth_model\.encoder\.stages\.(\d)\.(\d+)\.pwconv([12])\.", r"encoder.stages.\1.blocks.\2.mlp.fc\3."),
    # Hourglass feature pyramid: upconv_l_0 -> reduce{l}, upconv_l_1 -> merge{l}; "conv.1." is the conv after
    # the official ReflectionPad2d (ours pads inside the conv), "conv_2." the second 1x1 conv.
    (r"^depth_model\.decoder\.decoder_mono\.upconv_(\d)_0\.conv\.(?:1\.)?", r"decoder.fpn.reduce\1.conv1."),
    (r"^depth_model\.decoder\.decoder_mono\.upconv_(\d)_1\.conv\.(?:1\.)?", r"decoder.fpn.merge\1.conv1."),
    (r"^depth_model\.decoder\.decoder_mono\.upconv_(\d)_1\.conv_2\.", r"decoder.fpn.merge\1.conv2."),
    # U-Net: conv0 -> stem, conv_i -> down[i], deconv_i = (ConvTranspose2d, BN) -> up[i], prob -> head.
    (r"^depth_model\.decoder\.conv_out_2\.conv0\.", "decoder.unet.stem."),
    (r"^depth_model\.decoder\.conv_out_2\.conv_(\d)\.", r"decoder.unet.down.\1."),
    (r"^depth_model\.decoder\.conv_out_2\.deconv_(\d)\.0\.", r"decoder.unet.up.\1.deconv."),
    (r"^depth_model\.decoder\.conv_out_2\.deconv_(\d)\.1\.", r"decoder.unet.up.\1.bn."),
    (r"^depth_model\.decoder\.conv_out_2\.prob\.", "decoder.unet.head."),
    # Depth-bin logits: Sequential(conv3x3, BN, ReLU, conv1x1).
    (r"^depth_model\.decoder\.depth_regressor_2\.0\.", "decoder.bin_head.conv."),
    (r"^depth_model\.decoder\.depth_regressor_2\.1\.", "decoder.bin_head.bn."),
    (r"^depth_model\.decoder\.depth_regressor_2\.3\.", "decoder.bin_head.logits."),
    # Full-resolution residual: Sequential(conv, BN, ReLU, conv, Upsample x4, conv, ReLU, conv1x1).
    (r"^depth_model\.decoder\.conv_up_2\.0\.", "decoder.refine.conv1."),
    (r"^depth_model\.decoder\.conv_up_2\.1\.", "decoder.refine.bn1."),
    (r"^depth_model\.decoder\.conv_up_2\.3\.", "decoder.refine.conv2."),
    (r"^depth_model\.decoder\.conv_up_2\.5\.", "decoder.refine.conv3."),
    (r"^depth_model\.decoder\.conv_up_2\.7\.", "decoder.refine.out."),
]

RULES: dict[str, list[tuple[str, str | None]]] = {"vit": VIT_RULES, "convnext": CONVNEXT_RULES}


def remap_state_dict(state_dict: dict, family: Family) -> dict:
    """Return a new dict with official keys renamed to metrocli's (values untouched, order kept)."""
    compiled = [(re.compile(p), r) for p, r in RULES[family]]
    out = {}
    for key, value in state_dict.items():
        new_key: str | None = key
        for pattern, repl in compiled:
            if pattern.search(key):
                new_key = None if repl is None else pattern.sub(repl, key, count=1)
                break
        if new_key is not None:
            out[new_key] = value
    return out
