import os

# Idle OpenMP threads sleep instead of spinning: torch's pool and numba's kernels share 2 cores here,
# and spinning threads starve the other pool (10x+ slow-downs seen on a loaded machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Many CLI tests call fastweights.cli.main in this process: a fault left in the environment would kill pytest.
os.environ.pop("FASTWEIGHTS_FAULT", None)
