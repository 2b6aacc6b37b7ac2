"""The backbone registry: every backbone's output for 1 and 3 channels at 28 and 64 px, key layouts, stems."""
import pytest
import torch
import torchvision

from models.backbones import BACKBONES, backbone_options, build_backbone, check_stem, reads
from models.resnet import ResNetEncoder
from models.vit import patch_size

NETWORKS = [(name, stem) for name, entry in BACKBONES.items() if entry.dims == 2 for stem in (entry.stems or (None,))]
# the 3D backbones: tests/downstream/test_3d.py


@pytest.mark.parametrize("name, stem", NETWORKS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
def test_every_backbone_gives_features_of_its_width(name, stem, channels, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, channels, size, stem).eval()
    with torch.no_grad():
        features = backbone(torch.randn(2, channels, size, size).contiguous(memory_format=torch.channels_last))
    assert features.shape == (2, backbone.feature_dim) and torch.isfinite(features).all()
    assert backbone.in_channels == channels and reads(backbone, channels, size)
    assert backbone.backbone_options == {"backbone": name, "stem": stem, "in_channels": channels, "size": size,
                                         "resize": None, "patch_topk": None}


def test_resnet_keys_are_torchvision_s_with_either_stem():
    reference = set(torchvision.models.resnet18().state_dict()) - {"fc.weight", "fc.bias"}
    for stem in ("imagenet", "small"):
        assert set(ResNetEncoder("resnet18", 3, stem).state_dict()) == reference
    assert ResNetEncoder("resnet18", 1, "small").conv1.weight.shape == (64, 1, 3, 3)
    assert ResNetEncoder("resnet18", 3, "imagenet").conv1.weight.shape == (64, 3, 7, 7)


def test_small_stem_keeps_the_resolution_the_imagenet_stem_divides_by_four():
    x = torch.randn(1, 1, 28, 28)
    for stem, side in (("imagenet", 7), ("small", 28)):
        net = ResNetEncoder("resnet18", 1, stem).eval()
        assert net.maxpool(net.relu(net.bn1(net.conv1(x)))).shape[-1] == side


@pytest.mark.parametrize("name", ["resnet18", "small_cnn", "vit_tiny"])
def test_an_rgb_stem_reads_grey_images_as_grey_repeated_three_times(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, 3, 28).eval()
    grey = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(backbone(grey), backbone(grey.expand(-1, 3, -1, -1)), atol=1e-5)
    assert reads(backbone, 1, 28) and not reads(backbone, 2, 28)


@pytest.mark.parametrize("name", ["resnet18", "small_cnn", "vit_tiny"])
def test_a_grey_stem_reads_colour_images_as_their_luminance(name):
    from models.stem import LUMA

    torch.manual_seed(0)
    backbone = build_backbone(name, 1, 28).eval()
    rgb = torch.randn(2, 3, 28, 28)
    luminance = (rgb * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.no_grad():
        assert torch.allclose(backbone(rgb), backbone(luminance), atol=1e-5)
    assert reads(backbone, 3, 28)


def test_a_vit_reads_only_its_own_size_and_its_patch_follows_the_size():
    assert [patch_size(s) for s in (28, 64, 128, 224)] == [4, 4, 8, 16]
    vit = build_backbone("vit_tiny", 1, 28)
    assert reads(vit, 1, 28) and not reads(vit, 1, 64)
    assert reads(build_backbone("small_cnn", 1, 28), 1, 64)  # convolutional nets read any size


def test_stems_and_recorded_options():
    assert check_stem("resnet18", None) == "imagenet" and check_stem("small_cnn", None) is None
    with pytest.raises(ValueError, match="no --stem choice"):
        check_stem("small_cnn", "small")
    with pytest.raises(ValueError, match="unknown backbone"):
        check_stem("resnet19", None)
    # what older checkpoints record: ours `arch`, the study's nothing: ResNet-18, ImageNet stem, RGB
    assert backbone_options({"arch": "resnet34"}) == {"backbone": "resnet34", "stem": "imagenet", "in_channels": 3,
                                                      "size": 28, "resize": None, "patch_topk": None}
    assert backbone_options({}) == build_backbone().backbone_options  # the study's ResNet-18


@pytest.mark.parametrize("name, stem", [("resnet18", "small"), ("small_cnn", None), ("vit_tiny", None)])
def test_resize_upsamples_on_the_device_as_torch_interpolate_then_runs_the_network(name, stem):
    torch.manual_seed(0)
    resized = build_backbone(name, 1, 28, stem, resize=64).eval()
    plain = build_backbone(name, 1, 64, stem).eval()
    plain.load_state_dict(resized.state_dict())  # the same keys: the resize is a hook, not a layer
    images = torch.rand(3, 1, 28, 28)
    upsampled = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(resized(images), plain(upsampled), atol=1e-5)
        assert torch.allclose(resized(upsampled), plain(upsampled), atol=1e-5)  # already 64 px: unchanged
    assert resized.backbone_options["resize"] == 64 and reads(resized, 1, 28)
    rebuilt = build_backbone(**backbone_options(resized.backbone_options)).eval()  # as a checkpoint rebuilds it
    rebuilt.load_state_dict(resized.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(images), plain(upsampled), atol=1e-5)
