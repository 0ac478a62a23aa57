"""The load run of issue 10: the sharded runtime end to end against REST polling, measured.

`instrument` holds the off-by-default per-record logs the worker and the shard
write for it; `runtime` starts the real processes; `analysis` joins the logs into
latencies; `polling` is the REST baseline; `report` prints, writes JSON and plots;
`run` ties them together for `arbees load` and `scripts/load_20_markets.py`.
"""
