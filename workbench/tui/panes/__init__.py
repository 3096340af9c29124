"""The workbench panes: each reads a driver Frame and draws it (nothing here touches the Machine)."""

from .energy import EnergyPane
from .kv import KvPane
from .mesh import MeshPane
from .output import OutputPane
from .perf import PerfPane
from .program import ProgramPane
from .sram import SramPane

PANES = (SramPane, KvPane, MeshPane, EnergyPane, PerfPane, OutputPane, ProgramPane)
