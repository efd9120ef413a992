"""SLURM: the launcher, its batch script template, and what it parses from SLURM."""
