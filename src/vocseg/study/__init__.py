"""Studies over many runs: the paper's experiments as data, rerunning them (reproduce), comparing run
folders (compare) with paired bootstrap tests (significance), and the report both write."""
