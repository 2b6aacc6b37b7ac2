"""The ViT sizes, without torch (the backbone registry counts their blocks for --features stage:K)."""

# DeiT's Tiny and Small sizes (Touvron et al. 2021), less one block for the conv stem (Xiao et al.)
SIZES = {
    "tiny": dict(hidden_dim=192, num_heads=3, mlp_dim=768, num_layers=11),
    "small": dict(hidden_dim=384, num_heads=6, mlp_dim=1536, num_layers=11),
}
