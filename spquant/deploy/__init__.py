"""Integer-only deployment of trained spquant models (docs/method.md#integer-deployment).

fold (BN + scales -> fixed point) -> deploy simulation (torch, exact) -> .spq model file ->
integer interpreter (numpy reference and fast exact path). See docs/deploy.md.
"""

from spquant.deploy.fold import fold_model
from spquant.deploy.interpreter import Interpreter, OpCounts, lif_step_int, requant
from spquant.deploy.program import OPS, DeployError, Program, analyze, input_encoding
from spquant.deploy.sim import DeploySim, deploy_sim
from spquant.deploy.targets.spq import ModelFileError, export, file_report, load, save

__all__ = [
    "DeployError",
    "OPS",
    "input_encoding",
    "DeploySim",
    "Interpreter",
    "ModelFileError",
    "export",
    "file_report",
    "load",
    "save",
    "OpCounts",
    "Program",
    "analyze",
    "deploy_sim",
    "fold_model",
    "lif_step_int",
    "requant",
]
