"""Networks: the backbone registry, heads, and the one function that loads weights into them."""
from models.backbones import BACKBONES, build_backbone
from models.heads import ProjectionHead, linear_head

__all__ = ["BACKBONES", "build_backbone", "ProjectionHead", "linear_head"]
