"""`argus bench controller --solver` takes only a MIP backend: anything else would time something other than the
allocation MILP (the route-LP fallback for an unknown name, the LP relaxation for an LP backend)."""

import pytest

from engine.cli import main


@pytest.mark.parametrize("solver", ["NOSUCH", "GLOP"])
def test_a_solver_that_is_no_mip_backend_is_refused(solver, capsys):
    assert main(["bench", "controller", "--solver", solver, "--workers", "8", "--solves", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--solver {solver}: not a MIP backend" in err
