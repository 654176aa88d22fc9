"""Export targets of an integer :class:`~spquant.deploy.program.Program`, side by side.

* :mod:`spquant.deploy.targets.spq`: the ``.spq`` model file (packed integer codes, JSON manifest,
  checksums; read back with validation, never executing code) — ``docs/deploy_format.md``;
* :mod:`spquant.deploy.targets.nir`: a NIR graph for neuromorphic toolchains (needs the ``nir``
  extra).

A new target is one module here that reads the program's nodes (every op of
:data:`spquant.deploy.program.OPS`, or a :class:`~spquant.deploy.program.DeployError` naming the
op it cannot express) and writes its format.
"""
