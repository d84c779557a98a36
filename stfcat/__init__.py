"""stfcat: the executable companion of the deep-learning spatiotemporal-fusion survey.

Light on import on purpose: ``stfcat --help`` must answer instantly, so heavy modules (torch,
rasterio, matplotlib) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
