-- Benchmarks only (cargo feature `bench-floor`): the floor of one settlement call, which
-- writes nothing (see floor/admit.lua).
return 1
