"""Development tooling that both the tests and the benchmarks use, so that neither imports the
other: the broker table (KMB_BROKER*), a messagebus.conf writer, the recorded hub callbacks, the
fault proxy, kojihub's database wrappers, and the load and fault harness of hub processes.

Not installed (setup.py packages only koji_messagebus); run from the checkout's top directory."""
