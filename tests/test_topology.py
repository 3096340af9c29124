"""Topologies: routes, hop counts and links, including the crossbar that stands in for a GPU's L2."""

from __future__ import annotations

import numpy as np

from workbench.chip import load_chip
from workbench.machine.topology import PORT_IN, PORT_OUT, build


def test_crossbar_routes_cross_one_port_out_and_one_in():
    topo = build(3, 4, "crossbar")
    assert topo.hops[5, 5] == 0 and topo.hops[0, 11] == topo.hops[11, 0] == 2
    assert topo.path(2, 9) == [2 * 4 + PORT_OUT, 9 * 4 + PORT_IN]
    assert topo.path(7, 7) == []
    exists = topo.link_exists()
    assert exists[:, PORT_OUT].all() and exists[:, PORT_IN].all() and not exists[:, [1, 3]].any()
    dst = topo.link_destination()
    assert (dst[PORT_IN::4] == np.arange(12)).all() and (dst[PORT_OUT::4] == -1).all()


def test_mesh_routes_unchanged_by_the_crossbar_flag():
    topo = build(3, 4, "mesh")
    assert topo.hops[0, 11] == 5
    assert len(topo.path(0, 11)) == 5 and topo.path(0, 1) == [1]   # tile 0 east


def test_gpu_profiles_are_crossbars_with_every_sm_in_one_group():
    h100 = load_chip("nvidia-h100-sxm")
    assert h100.mesh.topology == "crossbar" and h100.mesh.tensor_group_tiles == h100.n_tiles == 132
    assert h100.noc_bisection_links == 66
    assert load_chip("amd-mi300x").mesh.topology == "crossbar"
