"""Networks derived from a method's VNet factory: the same class count, width, input channels and
dropout, another network class (e.g. a VNet with extra heads)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from micd.errors import SettingsError

Net = TypeVar("Net", bound=nn.Module)


def derived_network(factory: Callable[..., nn.Module], cls: type[Net], **overrides: Any) -> Net:
    """``cls`` built with the arguments the factory binds (``functools.partial(VNet, num_classes,
    n_filters=..., dropout=...)``, as ``build_method`` makes it), ``overrides`` on top."""
    if not isinstance(factory, functools.partial):
        raise SettingsError(
            f"{cls.__name__} is built from the method's network factory, which must be a functools.partial "
            f"of VNet carrying its arguments; got {factory!r}"
        )
    return cls(*factory.args, **{**factory.keywords, **overrides})


def network_option(factory: Callable[..., nn.Module], name: str) -> Any:
    """An argument the factory binds (e.g. ``n_filters``), or None when it binds none."""
    keywords = getattr(factory, "keywords", None)
    return keywords.get(name) if isinstance(keywords, dict) else None
