"""kitesim: a local Kite Connect v3 simulator (WebSocket ticker + REST API).

Run it with ``python -m kitesim --ws-port P --http-port Q --seed S``; embed it in
tests with :func:`kitesim.testing.running_simulator` or
:func:`kitesim.testing.spawn_simulator`. The official ``kiteconnect`` client
works against it unchanged (pass ``root=``). Pure parts (packets, market,
orders, portfolio, history) have no I/O and are unit-tested on their own.
"""
