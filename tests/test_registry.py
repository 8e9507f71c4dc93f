"""Tests for vlp.registry: one Registry per component kind, helpful errors, no silent overwrites."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vlp.registry import Registry, RegistryError


@dataclass
class ViTConfig:
    kind: str = "vit"
    width: int = 8


def make() -> Registry:
    reg: Registry = Registry("image encoder")

    @reg.register("vit", config=ViTConfig)
    def build_vit(cfg: ViTConfig) -> str:
        return f"vit{cfg.width}"

    @reg.register("patch")
    class Patch:
        pass

    return reg


def test_register_returns_object_and_lookup_works():
    reg = make()
    builder = reg.get("vit")
    assert builder(ViTConfig(width=4)) == "vit4" and builder.__name__ == "build_vit"  # decorator is transparent
    assert reg.get(ViTConfig().kind) is builder
    assert reg.config("vit") is ViTConfig and reg.config("patch") is None
    assert reg.names() == ["patch", "vit"] and list(reg) == ["patch", "vit"] and len(reg) == 2
    assert [name for name, _ in reg.items()] == ["patch", "vit"] and reg.items()[1][1] is builder
    assert "vit" in reg and "cnn" not in reg and 3 not in reg


def test_unknown_name_suggests_nearest_and_lists_all():
    reg = make()
    with pytest.raises(RegistryError) as info:
        reg.get("vti")
    assert str(info.value) == "unknown image encoder 'vti'; did you mean 'vit'? available: patch, vit"
    assert isinstance(info.value, KeyError)  # `except KeyError` callers keep working
    with pytest.raises(KeyError, match="unknown image encoder 'resnet'; available: patch, vit"):
        reg.get("resnet")
    with pytest.raises(RegistryError):
        reg.config("nope")
    with pytest.raises(RegistryError, match=r"available: \(none\)"):
        Registry("fusion").get("x")


def test_duplicate_and_invalid_registration_are_errors():
    reg = make()
    with pytest.raises(ValueError, match="'vit' is already registered"):
        reg.register("vit")(lambda cfg: None)
    assert reg.get("vit").__name__ == "build_vit"  # the first entry survives
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("")
    with pytest.raises(ValueError, match="config ViTConfig has kind 'vit'"):
        reg.register("cnn", config=ViTConfig)


def test_registries_are_independent():
    a, b = Registry("image encoder"), Registry("text encoder")
    a.register("x")(object)
    assert "x" in a and "x" not in b and b.names() == []
    assert "image encoder" in repr(a)
