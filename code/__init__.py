"""stfcat's reference implementations (installed as the package ``stfcat_zoo``).

One module per method; each registers itself with ``@stfcat.models.register_model``. The folder
is called ``code/`` in the repository, but ``code`` is a standard-library module, so it is
importable (from a clone installed with ``pip install -e .`` and from a wheel) as ``stfcat_zoo``.
"""
