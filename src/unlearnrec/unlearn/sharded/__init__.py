"""The partition (SISA-style) baselines: :mod:`partition` (balanced shards), :mod:`pool` (the shards'
sub-models), :mod:`base` (the shared skeleton), :mod:`receraser` and :mod:`grapheraser`."""
