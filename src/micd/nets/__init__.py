from micd.nets.vnet import VNet, count_parameters

__all__ = ["VNet", "count_parameters"]
