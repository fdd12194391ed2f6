"""``python -m benchmarks.peers``: make the peers' venvs ahead of a benchmark run."""

from benchmarks.peers import main

main()
